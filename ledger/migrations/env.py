from alembic import context

from gridpay.all_tables import metadata
from ledger.db import make_engine
from ledger.partitions import include_name

url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # SQLite changes a constraint by rebuilding the table (batch mode): that drops a
                # table other tables refer to, which foreign keys forbid. They are off for the
                # migration (outside any transaction, as SQLite requires) and checked after it.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(connection=conn, target_metadata=metadata, render_as_batch=sqlite,
                              include_name=include_name)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows that break foreign keys: {broken[:5]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
