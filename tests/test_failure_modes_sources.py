"""Failure modes of the data layer (issue 10).

Every class of bad source input gets a ddxr error naming where it is and what to do, or a counted skip in the
build report — never a lost run, a leaked secret or a bare traceback.
"""

from __future__ import annotations

import ast
import json
import shutil
import sqlite3
import time
import tracemalloc
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from ddxr.cli import main
from ddxr.errors import InvalidArgumentError, SourceError
from ddxr.facade import DataDecideNext
from ddxr.managers.evaluations import EvaluationManager
from ddxr.managers.naming import parse_model_paths, parse_run_names
from ddxr.managers.progression import repair_token_restarts
from ddxr.sources.datadecide import _parse_dicts, parse_metrics, read_datadecide
from ddxr.sources.wandb_store import WandBStore
from ddxr.synthetic import generate


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """One size, one recipe: five budgeted SFT runs of 54 history rows, two short SFT runs and a DPO run."""
    root = tmp_path_factory.mktemp("failure_sources")
    truth = generate(root, params=("4M",), data=("Dolma1.7",), n_runs=8, messy=False)
    return root, truth.runs


def _copy(sources: tuple[Path, pd.DataFrame], tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    root = tmp_path / "sources"
    shutil.copytree(sources[0], root)
    return root, sqlite3.connect(root / "wandb.db")


def _long_sft_run(runs: pd.DataFrame) -> str:
    return runs.loc[runs["run_id"].str.contains("500Mtx1"), "run_id"].iloc[0]


# ----------------------------------------------------------------------------------------------- history rows


_NOT_A_NUMBER = "total_tokens missing or not a number"
_NOT_FINITE = "total_tokens is not finite"


def test_history_rows_without_numeric_tokens_are_counted_skips(small_sources, tmp_path):
    root, store = _copy(small_sources, tmp_path)
    runs = small_sources[1]
    long_runs = runs.loc[runs["run_id"].str.contains("500Mtx1"), "run_id"].tolist()[:4]
    dpo_run = runs.loc[runs["run_type"] == "dpo", "run_id"].iloc[0]
    bad = {  # run -> the two rows (steps 1000, 2000) it spoils; the last run's counter is Infinity on every row
        long_runs[0]: ("json_remove(metrics, '$.total_tokens')", "json_set(metrics, '$.total_tokens', json('[1]'))"),
        long_runs[1]: ("json_set(metrics, '$.total_tokens', 'lots')", "json_set(metrics, '$.total_tokens', 'NaN')"),
        long_runs[2]: tuple(f"json_set(metrics, '$.total_tokens', '{text}')" for text in ("Infinity", "-Infinity")),
    }
    with store:
        for run_id, (first, second) in bad.items():
            store.execute(f"UPDATE wandb_history SET metrics = {first} WHERE run_id = ? AND step = 1000", [run_id])
            store.execute(f"UPDATE wandb_history SET metrics = {second} WHERE run_id = ? AND step = 2000", [run_id])
        store.execute(
            "UPDATE wandb_history SET metrics = json_set(metrics, '$.total_tokens', 'Infinity') WHERE run_id = ?",
            [long_runs[3]],
        )
        store.execute(  # the DPO counter, whose tokens are estimated from it
            "UPDATE wandb_history SET metrics = json_set(metrics, '$.training_step', 'Infinity') "
            "WHERE id = (SELECT max(id) FROM wandb_history WHERE run_id = ?)",
            [dpo_run],
        )
    dd = DataDecideNext(root, f"sqlite:///{root / 'wandb.db'}", cache_dir=tmp_path / "cache", progress=False)
    curves, _ = dd.build()  # one Infinity used to abort the whole build
    assert np.isfinite(curves["cumulative_tokens"].to_numpy()).all()
    for run_id in bad:
        kept = dd.training.get_training_curves("supervised_ft", [run_id])
        assert len(kept) == 52 and not kept["step"].isin([1000, 2000]).any()
        assert np.isfinite(kept["run_tokens"]).all() and (np.diff(kept["run_tokens"]) > 0).all()
    table = dd.runs_table().set_index("run_id")
    assert table.loc[long_runs[:3], "n_history_rows"].tolist() == [52, 52, 52]
    assert table.loc[long_runs, "history_rows_skipped"].tolist() == [2, 2, 2, 54]
    assert table.loc[long_runs[:3], "in_curves"].all() and (table.loc[long_runs[:3], "skip_reason"] == "").all()
    assert (table.drop(index=[*long_runs, dpo_run])["history_rows_skipped"] == 0).all()
    progression = dd.build_report()["progression"]
    assert progression["history_rows_skipped_by_run"] == {
        long_runs[0]: {_NOT_A_NUMBER: 2},
        long_runs[1]: {_NOT_A_NUMBER: 2},
        long_runs[2]: {_NOT_FINITE: 2},
        long_runs[3]: {_NOT_FINITE: 54},
        dpo_run: {"training_step is not finite": 1},
    }
    assert progression["history_rows_skipped"] == 61
    assert table.loc[dpo_run, ["n_history_rows", "history_rows_skipped"]].tolist() == [99, 1]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=20),
    st.lists(st.sampled_from([np.inf, -np.inf, np.nan]), min_size=1, max_size=3),
    st.data(),
)
def test_token_repair_never_propagates_non_finite_counters(increments, bad_values, data):
    counter = np.cumsum(increments).astype(float)
    counter[len(counter) // 2 :] -= counter[len(counter) // 2 - 1] / 2  # one restart
    clean = pd.Series(counter)
    positions = sorted(
        data.draw(st.lists(st.integers(0, len(counter)), min_size=len(bad_values), max_size=len(bad_values)))
    )
    with_bad = clean.tolist()
    for offset, (position, value) in enumerate(zip(positions, bad_values, strict=True)):
        with_bad.insert(position + offset, value)
    tokens = pd.Series(with_bad)
    repaired, restarted = repair_token_restarts(tokens, pd.Series(["run"] * len(tokens)))
    expected, expected_restart = repair_token_restarts(clean, pd.Series(["run"] * len(clean)))
    finite = np.isfinite(tokens.to_numpy())
    assert repaired[~finite].isna().all()
    np.testing.assert_allclose(repaired[finite].to_numpy(), expected.to_numpy())
    assert bool(restarted["run"]) == bool(expected_restart["run"])


# ----------------------------------------------------------------------------------------------- secrets

SECRET = "Zq9-s3cr@t/x"  # '@' and '/' make its URL spelling percent-encoded
QUOTED = quote(SECRET, safe="")


def _with_secret(pg_url: str, where: str) -> str:
    server, database = pg_url.rsplit("/", 1)
    if where == "userinfo":
        return f"{server.replace('postgres@', f'postgres:{QUOTED}@')}/{database}"
    return f"{pg_url}?sslmode=disable&{where}={QUOTED}"


def _error_text(error: BaseException) -> str:
    return " ".join(f"{link!s} {link!r}" for link in (error, error.__cause__, error.__context__))


@pytest.mark.parametrize("where", ["userinfo", "password", "sslpassword", "passfile", "PASSWORD", "api_token"])
def test_every_credential_of_a_url_is_redacted(pg_url, where):
    url = _with_secret(pg_url, where)
    shown = []
    try:
        store = WandBStore(url)  # trust auth ignores passwords; libpq refuses unknown options
    except SourceError as error:
        assert where in ("PASSWORD", "api_token") and "invalid connection option" in str(error)
        shown.append(_error_text(error))
    else:
        with store:
            with pytest.raises(SourceError, match="no wandb_runs table") as caught:
                store.read_runs()
            store.create_tables()
            shown += [_error_text(caught.value), store.url_redacted, repr(store), json.dumps(store.stats())]
            assert "***" in store.url_redacted
    unreachable = url.replace(":5432/", ":1/")
    with pytest.raises(SourceError, match="cannot connect") as caught:
        WandBStore(unreachable)
    shown.append(_error_text(caught.value))
    for text in shown:
        assert SECRET not in text and QUOTED not in text and "s3cr" not in text


def test_secrets_stay_out_of_the_file_and_ddxr_info(pg_url, tmp_path, capsys):
    url = f"{pg_url.replace('postgres@', f'postgres:{QUOTED}@')}?sslpassword={QUOTED}"
    generate(tmp_path / "sources", store_url=url, params=("4M",), data=("Dolma1.7",), n_runs=3, messy=False)
    dd = DataDecideNext(tmp_path / "sources", url, cache_dir=tmp_path / "cache", progress=False)
    curves = dd.dataset()
    sources = json.loads(curves.attrs["sources"])["wandb_store"]
    assert sources.startswith("postgresql://postgres:***@") and sources.endswith("?sslmode") is False
    assert "sslpassword=***" in sources
    assert main(["info", str(dd.cache_path())]) == 0
    printed = capsys.readouterr()
    assert "sslpassword=***" in printed.out
    for text in (printed.out, printed.err, dd.cache_path().read_bytes().decode("latin-1")):
        assert SECRET not in text and QUOTED not in text and "s3cr" not in text


# ----------------------------------------------------------------------------------------------- resources


def test_a_locked_store_table_fails_with_a_timeout_instead_of_hanging(pg_url):
    with WandBStore(pg_url) as store:
        store.create_tables()
    holder = psycopg2.connect(pg_url)  # a second session, e.g. a downloader rewriting the table
    try:
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE wandb_history IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with WandBStore(pg_url, lock_timeout=0.5) as store, pytest.raises(SourceError) as caught:
            store.read_history(None, ["train_loss"])
        assert time.monotonic() - started < 10
        message = str(caught.value)
        assert "did not answer in time" in message and "lock timeout" in message
        assert "another session holds a lock" in message and "lock_timeout" in message
        # the URL's own options win over the keyword
        with WandBStore(f"{pg_url}?options=-c%20lock_timeout%3D300ms", lock_timeout=None) as store:
            with pytest.raises(SourceError, match="did not answer in time"):
                store.stats()
    finally:
        holder.rollback()
        holder.close()
    with WandBStore(pg_url, lock_timeout=0.5) as store:  # the lock is gone: reads work again
        assert store.read_history(None, ["train_loss"]).empty
    with pytest.raises(InvalidArgumentError, match="lock_timeout must be a number of seconds"):
        WandBStore(pg_url, lock_timeout=-1)


# ----------------------------------------------------------------------------------------------- store reads


def _two_run_store(url: str) -> tuple[WandBStore, sa.Engine]:
    store = WandBStore(url)
    store.create_tables()
    runs = pd.DataFrame(
        {
            "run_id": ["r1", "r2"],
            "run_name": ["one", "two"],
            "state": "finished",
            "project": "p",
            "entity": "e",
            "created_at": "2025-09-01T00:00:00Z",
            "summary": [{"oe_eval_metrics/arc_challenge": {"primary_score": 0.5}}, {}],
        }
    )
    store.store_runs(runs)
    store.store_history(pd.DataFrame({"run_id": ["r1", "r1", "r2"], "step": [1, 2, 1], "train_loss": [3.0, 2.0, 1.0]}))
    return store, sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))


def test_text_in_numeric_history_columns_names_run_and_value(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # a downloader may have made them text columns
            connection.exec_driver_sql("ALTER TABLE wandb_history ALTER COLUMN step TYPE text")
            connection.exec_driver_sql("ALTER TABLE wandb_history ALTER COLUMN runtime TYPE text")
        connection.exec_driver_sql("UPDATE wandb_history SET step = 'ten' WHERE run_id = 'r2'")
    with pytest.raises(SourceError, match=r"wandb_history.step of run 'r2' holds 'ten'.*expected an integer"):
        store.read_history(None, ["train_loss"])
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_history SET step = '3', runtime = 'soon' WHERE run_id = 'r2'")
    with pytest.raises(SourceError, match=r"wandb_history.runtime of run 'r2' holds 'soon'.*expected a number"):
        store.read_history(["r2"], ["train_loss"])
    assert store.read_history(["r1"], ["train_loss"])["step"].tolist() == [1, 2]


def test_renamed_state_column_and_null_names(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_runs SET run_name = NULL, state = NULL WHERE run_id = 'r2'")
    runs = store.read_runs().set_index("run_id")
    assert runs.loc["r2", ["run_name", "state"]].tolist() == ["", ""]  # unknown, not a crash
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE wandb_runs RENAME COLUMN state TO run_state")
    store = WandBStore(store_url)
    for read in (store.read_runs, store.stats):
        with pytest.raises(SourceError, match=r"wandb_runs in .* lacks columns \['state'\]"):
            read()


def test_null_run_id_is_named(sqlite_url):
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:  # a downloader's table, without ddxr's constraints
        connection.exec_driver_sql(
            "CREATE TABLE wandb_runs (run_id TEXT, run_name TEXT, state TEXT, project TEXT, entity TEXT, "
            "created_at TEXT, config TEXT, summary TEXT)"
        )
        connection.exec_driver_sql(
            "INSERT INTO wandb_runs VALUES ('r1', 'one', 'finished', 'p', 'e', '2025-09-01', '{}', '{}'), "
            "(NULL, 'two', 'finished', 'p', 'e', '2025-09-01', '{}', '{}')"
        )
    with pytest.raises(SourceError, match=r"1 rows with a NULL run_id \(the first has run_name 'two'\)"):
        WandBStore(sqlite_url).read_runs()


def test_sqlite_null_json_reads_as_empty_dicts(sqlite_url):
    store, engine = _two_run_store(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE wandb_runs SET config = NULL, summary = 'null', system_attrs = NULL WHERE run_id = 'r1'"
        )
    runs = store.read_runs().set_index("run_id")
    assert runs.loc["r1", "config"] == {} and runs.loc["r1", "summary"] == {} and runs.loc["r1", "tags"] == []
    assert store.read_run_entries("summary", "oe_eval_metrics/").empty


_DEEP = "[" * 5000 + "1" + "]" * 5000


def test_deeply_nested_json_names_the_run(store_url):
    store, engine = _two_run_store(store_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE wandb_runs SET config = :deep WHERE run_id = 'r2'"), {"deep": '{"deep": ' + _DEEP + "}"}
        )
    with pytest.raises(SourceError, match=r"wandb_runs.config of run 'r2' is not a JSON object \(nested too deep"):
        store.read_runs()


@pytest.mark.parametrize(
    "cell",
    ['{"train_loss": NaN}', '{"train_loss": Infinity}', '{"train_loss": 1', '{"x": ' + _DEEP + "}"],
    ids=["NaN", "Infinity", "truncated", "deep"],
)
def test_invalid_json_in_a_sqlite_store_names_table_run_and_row(sqlite_url, cell):
    store, engine = _two_run_store(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE wandb_history SET metrics = ? WHERE run_id = 'r1' AND step = 2", (cell,))
        connection.exec_driver_sql("UPDATE wandb_runs SET summary = ? WHERE run_id = 'r2'", (cell,))
        row_id = connection.exec_driver_sql("SELECT id FROM wandb_history WHERE run_id = 'r1' AND step = 2").scalar()
    with pytest.raises(SourceError, match=rf"wandb_history.metrics of run 'r1' \(row id {row_id}; 1 rows in all\)"):
        store.read_history(None, ["train_loss"])
    with pytest.raises(SourceError, match=r"wandb_runs.summary of run 'r2' \(its row; 1 rows in all\) is not valid"):
        store.read_run_entries("summary", "oe_eval_metrics/")
    with pytest.raises(SourceError, match=r"wandb_runs.summary of run 'r2' is not a JSON object"):
        store.read_runs()


def test_a_string_of_keys_is_refused_whole(sqlite_url):
    store, _ = _two_run_store(sqlite_url)
    with pytest.raises(InvalidArgumentError, match=r"not the string 'train_loss'; wrap it in a list"):
        store.read_history(["r1"], "train_loss")
    with pytest.raises(InvalidArgumentError, match=r"not the string 'train_loss'; wrap it in a list"):
        next(store.iter_history(["r1"], "train_loss"))
    assert store.read_history(["r1"], iter(["train_loss"]))["train_loss"].tolist() == [3.0, 2.0]


# ----------------------------------------------------------------------------------------------- DataDecide


@pytest.mark.parametrize("emptied", ["ppl_eval", "downstream_eval", "both"])
def test_zero_row_datadecide_files_are_reported_or_refused(small_sources, tmp_path, emptied):
    folder = tmp_path / "datadecide"
    shutil.copytree(small_sources[0] / "datadecide", folder)
    names = ["ppl_eval", "downstream_eval"] if emptied == "both" else [emptied]
    for name in names:
        table = pq.read_table(folder / f"{name}.parquet")
        pq.write_table(table.slice(0, 0), folder / f"{name}.parquet")
    if emptied == "both":
        with pytest.raises(SourceError, match="no DataDecide checkpoint to read .* re-download"):
            read_datadecide(folder)
        return
    evals = read_datadecide(folder)
    what = "perplexities" if emptied == "ppl_eval" else "downstream metrics"
    skipped = evals.skipped.set_index("reason")
    assert skipped.loc[f"file holds no rows: its {what} are absent from the dataset", "source"].endswith(
        f"{emptied}.parquet"
    )
    ppl = evals.table.filter(like="_valppl")
    assert ppl.isna().all().all() if emptied == "ppl_eval" else ppl.notna().any().any()
    assert evals.table["arc_challenge"].isna().all() == (emptied == "downstream_eval")


_TOO_LARGE = "value of 'acc_raw' is too large for a float: left NaN"


def test_huge_numbers_are_counted_nan_on_every_parse_path(sqlite_url, pg_url):
    digits = "1" + "0" * 400
    cells = [
        "{'acc_raw': 1e999, 'margin': inf}",  # fast path
        f"{{'acc_raw': {digits}, 'margin': -inf}}",  # fast path, integer spelling
        "{'acc_raw': 1e999, 'margin': inf, 'extra': (1)}",  # literal parser
        f"{{'acc_raw': {digits}, 'margin': inf, 'extra': (1)}}",  # literal parser, integer spelling
    ]
    values, problems = parse_metrics(cells)
    assert values["acc_raw"].isna().all() and np.isinf(values["margin"]).all()
    assert problems.groupby("reason")["row"].apply(list).to_dict()[_TOO_LARGE] == [0, 1, 2, 3]
    # full_eval columns stored as text
    full_eval = pd.DataFrame(
        {"params": ["4M"] * 3, "data": ["Dolma1.7"] * 3, "seed": [0] * 3, "step": [0, 1, 2]}
    ).assign(arc_challenge_acc_raw=pd.Series(["1e999", "inf", "0.5"], dtype=object))
    evals = read_datadecide(type("DataDecide", (), {"full_eval": full_eval})())
    assert evals.table["arc_challenge_acc_raw"].tolist()[1:] == [np.inf, 0.5]
    assert np.isnan(evals.table["arc_challenge_acc_raw"].iloc[0])
    assert (evals.skipped["reason"] == "value too large for a float: left NaN").sum() == 1
    # the store: JSON numbers beyond float64, while the strings W&B writes for inf stay inf
    for url in (sqlite_url, pg_url):
        store, engine = _two_run_store(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(
                'UPDATE wandb_history SET metrics = \'{"train_loss": 1e999, "lr": "Infinity"}\' WHERE run_id = \'r2\''
            )
            connection.exec_driver_sql(
                f"UPDATE wandb_history SET metrics = '{{\"train_loss\": {digits}}}' WHERE step = 2"
            )
        history = store.read_history(None, ["train_loss", "lr"])
        assert history["train_loss"].isna().tolist() == [False, True, True] and history["lr"].iloc[2] == np.inf
        assert history.attrs["coercion_failures"] == {"train_loss": 2, "lr": 0}


def _cell(keys: list[str]) -> str:
    return "{" + ", ".join(f"'{key}': 0.5" for key in keys) + "}"


def test_absurd_metrics_cells_are_skipped_and_memory_stays_bounded():
    real = _cell(["acc_raw", "acc_per_char", "primary_score"])
    huge = _cell([f"k{number}" for number in range(20_000)])  # 358 KB, 20k keys
    many_keys = [_cell([f"r{row}_{key}" for key in range(30)]) for row in range(1_000)]  # 30k distinct keys
    texts = pa.array([real, huge, *many_keys, "{" + "'x': 1, " * 1_200 + "'y': 2}"], pa.large_string())
    tracemalloc.start()
    parsed = _parse_dicts(texts, first_row=10)  # what the reader streams: (row, key, value) triplets
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # memory follows the triplets (30k), not cells × distinct keys (1k × 30k int64 = 240 MB before)
    assert peak < 50e6
    assert [row for row, _ in parsed.problems] == [11, 1_012]
    assert all(reason.startswith("metrics cell beyond 65536 characters or 1000 keys") for _, reason in parsed.problems)
    assert len(parsed.rows) == 3 + 30_000 and set(parsed.rows.tolist()) == {10, *range(12, 1_012)}
    values, problems = parse_metrics([real, huge])
    assert values.loc[0, ["acc_raw", "acc_per_char", "primary_score"]].tolist() == [0.5, 0.5, 0.5]
    assert values.shape == (2, 3) and values.iloc[1].isna().all() and problems["row"].tolist() == [1]


# ----------------------------------------------------------------------------------------------- fuzzing

_METRIC_TEXT = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="{}[]()'\":, -+.0123456789eEinfaNoTrueFalsx_\\", max_size=80),
    st.lists(
        st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), st.floats() | st.integers()),
        max_size=6,
    ).map(lambda items: "{" + ", ".join(f"'{key}': {value!r}" for key, value in items) + "}"),
    st.none(),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(_METRIC_TEXT, min_size=1, max_size=8))
def test_fuzzed_metrics_cells_give_values_or_counted_problems(texts):
    values, problems = parse_metrics(texts)
    assert len(values) == len(texts) and (values.dtypes == "float64").all()
    assert set(problems.columns) == {"row", "reason"} and problems["row"].between(0, len(texts) - 1).all()
    for row, text in enumerate(texts):  # a cell without any value is either empty or has a problem counted
        if values.iloc[row].isna().all() and text is not None and text.strip() not in ("{}", ""):
            if row not in set(problems["row"]):
                assert _only_missing_values(text)


def _only_missing_values(text: str) -> bool:
    """Return a dict literal all of whose values are None or nan (legitimately NaN, no problem to count)."""
    try:
        parsed = ast.literal_eval(text.replace("nan", "None"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return isinstance(parsed, dict) and all(value is None for value in parsed.values())


_NAME_TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="DdA-_=./0123456789MBtxlrFmainch", max_size=60),
    st.sampled_from(["DD-", "dd__", "allenai--DataDecide-", "_lr=", "Mtx", "match_", "models--"]).flatmap(
        lambda prefix: st.text(max_size=30).map(lambda rest: prefix + rest)
    ),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(_NAME_TEXT, st.none()), min_size=1, max_size=6))
def test_fuzzed_run_names_and_model_paths_parse_without_crashing(texts):
    names = pd.Series(texts, dtype=object)
    fields = parse_run_names(names)
    assert len(fields) == len(texts) and fields.index.equals(names.index)
    assert fields["family"].isin(["dd", "legacy", "dpo"]).where(fields["family"].notna(), True).all()
    numbers = fields[["step", "seed_index", "budget_tokens", "epochs", "parent_budget_tokens"]]
    assert all(pd.api.types.is_float_dtype(dtype) for dtype in numbers.dtypes)
    paths = parse_model_paths(names)
    assert len(paths) == len(texts)
    assert paths["kind"].isin(["hf_cache", "hf_repo", "output_dir", "missing"]).all()


def test_deeply_nested_evaluation_entries_are_counted_skips():
    entries = pd.DataFrame(
        {
            "run_id": ["r1", "r2"],
            "key": ["oe_eval_metrics/arc_challenge", "oe_eval_metrics/arc_challenge"],
            "value": ['{"primary_score": ' + _DEEP + "}", '{"primary_score": 0.5}'],
        }
    )
    values, issues = EvaluationManager().posttraining_evaluations(entries)
    assert values.loc["r2", "arc_challenge"] == 0.5 and "r1" not in values.index
    skipped = issues[issues["skipped"]]
    assert skipped["run_id"].tolist() == ["r1"] and skipped["task"].tolist() == ["arc_challenge"]
