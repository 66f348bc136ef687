from setuptools import find_packages, setup

setup(
    name="rsky-fleet",
    version="0.1.0",
    description="Index the AT Protocol network into the official Bluesky AppView schema",
    python_requires=">=3.11",
    packages=find_packages(include=["fleet", "fleet.*"]),
    package_data={"fleet": ["db/migrations/*.sql"]},
    install_requires=[
        "uvloop>=0.19",
        "redis[hiredis]>=5.0",
        "psycopg[binary,pool]>=3.1",
        "websockets>=12",
        "ujson>=5.9",
        "orjson>=3.9",
        "libipld>=3.0",
        "cbrrr>=1.1",
        "aiohttp>=3.9",
        "cryptography>=41",
        "regex>=2023.0",
        "setproctitle>=1.3",
        "prometheus-client>=0.19",
        "sdnotify>=0.3",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={
        "console_scripts": [
            "rsky-fleet=fleet.cli:fleet_main",
            "rsky-indexer=fleet.cli:indexer_main",
            "rsky-ingester=fleet.cli:ingester_main",
            "rsky-fetcher=fleet.cli:fetcher_main",
            "rsky-migrate=fleet.cli:migrate_main",
            "rsky-lag=fleet.cli:lag_main",
        ]
    },
)
