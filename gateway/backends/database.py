"""Opening the database the config names: embedded SQLite or shared PostgreSQL."""
from __future__ import annotations

from gateway.backends.sqlite import SQLiteDatabase
from gateway.config import StorageConfig


async def open_database(storage: StorageConfig):
    path = storage.sqlite_path
    if path is not None:
        return SQLiteDatabase(path)
    from gateway.backends.postgres import PostgresDatabase

    return await PostgresDatabase.connect(storage.database)
