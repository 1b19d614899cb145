import sqlalchemy as sa


def test_throwaway_databases_are_distinct_and_empty(make_pg_url):
    first, second = make_pg_url(), make_pg_url()
    assert first != second
    engine = sa.create_engine(first.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []
    engine.dispose()
