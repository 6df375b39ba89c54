"""The console's accounts in SQLite (`slawatch_user`), on the desk's records file."""

from __future__ import annotations

import sqlite3

from slawatch import schema
from slawatch.model import User
from slawatch.schema import USER
from slawatch.store.sqlite import SqliteStatements

_SELECT = f"SELECT {', '.join(USER.names)} FROM {USER.name}"
_INSERT = f"INSERT INTO {USER.name} ({', '.join(USER.names)}) VALUES ({', '.join('?' * len(USER.names))})"
_UPDATE = (f"UPDATE {USER.name} SET {', '.join(f'{n} = ?' for n in USER.names if n not in ('name', 'created_ms'))} "
           f"WHERE name = ?")


class SqliteUserStore(SqliteStatements):
    """Console accounts on one SQLite file (the records file). One connection; writes are single statements."""

    async def users(self) -> list[User]:
        rows, _ = await self._run("read users from", f"{_SELECT} ORDER BY name")
        return [schema.user(r) for r in rows]

    async def get(self, name: str) -> User | None:
        rows, _ = await self._run("read a user from", f"{_SELECT} WHERE name = ?", [name])
        return schema.user(rows[0]) if rows else None

    async def count(self) -> int:
        rows, _ = await self._run("count users in", f"SELECT COUNT(*) FROM {USER.name}")
        return int(rows[0][0])

    async def add(self, user: User) -> bool:
        """Store a new account; False when the name is taken."""
        try:
            await self._run("add a user to", _INSERT, schema.user_row(user))
        except sqlite3.IntegrityError:
            return False
        return True

    async def replace(self, user: User) -> bool:
        """Store an account's new role, customers or password; False when there is no such account."""
        row = dict(zip(USER.names, schema.user_row(user), strict=True))
        values = [row[n] for n in USER.names if n not in ("name", "created_ms")]
        _, count = await self._run("update a user in", _UPDATE, [*values, user.name])
        return count == 1

    async def remove(self, name: str) -> bool:
        _, count = await self._run("remove a user from", f"DELETE FROM {USER.name} WHERE name = ?", [name])
        return count == 1


__all__ = ["SqliteUserStore"]
