"""Object storage without Ray: storage options, concurrent fetches with a deadline, manifests
read from a real S3 server (moto), the commit protocol and its reader, the writer's lease."""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nightly_support import write_faces

from models.errors import UsageError
from models.framing import Framing
from models.imageio import ErrorCode, ImageError, StorageUnreachable
from scoring.config import read_config
from scoring.decode import decode_paths
from scoring.internal.fetch import FetchTimeout, fetch_all
from scoring.layout import RunState, verify_parts
from scoring.manifest import ManifestColumns, resolution_base, stage_manifest
from scoring.objectstore import ObjectStoreLayout, open_layout, read_committed
from scoring.storage import RemoteReads, StorageOptions, check_reachable


def test_storage_options_are_typed_and_checked():
    opts = StorageOptions.parse(
        [
            "endpoint_override=http://127.0.0.1:9",
            "allow_bucket_creation=TRUE",
            "connect_timeout=2.5",
        ]
    )
    assert opts.for_scheme("s3") == {
        "allow_bucket_creation": True,
        "connect_timeout": 2.5,
        "endpoint_override": "http://127.0.0.1:9",
    }
    assert StorageOptions.parse({"region": "eu-west-1", "project_id": "p"}).for_scheme("gs") == {
        "project_id": "p"
    }  # region is S3's only
    assert StorageOptions.parse(["secret_key=xyz"]).shown() == {"secret_key": "***"}
    with pytest.raises(
        UsageError, match="unknown --storage-option 'endpoint'; known: .*endpoint_override"
    ):
        StorageOptions.parse(["endpoint=x"])
    with pytest.raises(UsageError, match="write KEY=VALUE"):
        StorageOptions.parse(["endpoint_override"])
    with pytest.raises(UsageError, match="anonymous must be true or false, got 'maybe'"):
        StorageOptions.parse(["anonymous=maybe"])
    with pytest.raises(UsageError, match="request_timeout must be a number"):
        StorageOptions.parse(["request_timeout=soon"])


def test_a_toml_table_of_storage_options(tmp_path):
    from scoring.cli import run

    config = tmp_path / "nightly.toml"
    config.write_text(
        '[storage_options]\nendpoint_override = "http://127.0.0.1:9000"\nanonymous = true\n'
    )
    values = read_config(config, run)
    assert values["storage_options"] == [
        "endpoint_override=http://127.0.0.1:9000",
        "anonymous=true",
    ]
    config.write_text("[storage_options]\nendpoint_override = [1]\n")
    with pytest.raises(UsageError, match="storage_options must be a table of KEY = VALUE"):
        read_config(config, run)


def test_fetch_all_keeps_order_bounds_concurrency_and_gives_up_on_slow_items():
    running = 0
    peak = 0
    lock = threading.Lock()

    def fetch(item: float) -> float:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            if item < 0:
                raise ValueError("bad item")
            time.sleep(item)
            return item
        finally:
            with lock:
                running -= 1

    items = [0.05] * 12 + [5.0, -1.0, 0.01]
    t0 = time.monotonic()
    out = fetch_all(items, fetch, concurrency=4, timeout=0.5)
    took = time.monotonic() - t0
    assert out[:12] == [0.05] * 12 and out[14] == 0.01
    assert isinstance(out[12], FetchTimeout) and isinstance(out[13], ValueError)
    assert peak <= 4
    assert took < 2.0  # the slow item was given up at its deadline, not waited for


def test_manifests_on_s3_stage_as_local_ones(s3, tmp_path):
    """CSV, gzip CSV and Parquet manifests read from the server; relative paths resolve under
    the manifest's prefix, or under --root when that is in another store."""
    s3.bucket("manifests")
    rows = [("a1", "faces/1.jpg", "male"), ("a2", "faces/2.jpg", "female")]
    text = "image_id,path,label\n" + "".join(f"{i},{p},{lab}\n" for i, p, lab in rows)
    s3.put("manifests/day/m.csv", text.encode())
    s3.put("manifests/day/m.csv.gz", gzip.compress(text.encode()))
    table = pa.table({k: [r[j] for r in rows] for j, k in enumerate(["image_id", "path", "label"])})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    s3.put("manifests/day/m.parquet", buf.getvalue().to_pybytes())
    columns = ManifestColumns(id="image_id")
    for name in ("m.csv", "m.csv.gz", "m.parquet"):
        staged = stage_manifest(
            f"s3://manifests/day/{name}", tmp_path / name, columns, storage=s3.storage()
        )
        out = pq.read_table(staged.files).to_pydict()
        assert out["path"] == ["s3://manifests/day/faces/1.jpg", "s3://manifests/day/faces/2.jpg"]
        assert out["true_label"] == ["male", "female"] and staged.stores == {
            "s3://manifests": "s3://manifests/day/faces/1.jpg"
        }
    local = tmp_path / "local.csv"
    local.write_text(text)
    assert resolution_base(str(local), "s3://img/pool") == "s3://img/pool"
    assert resolution_base("s3://manifests/day/m.csv", "s3://manifests") == "s3://manifests/day"
    assert resolution_base(str(local), str(tmp_path)) == str(tmp_path)
    staged = stage_manifest(local, tmp_path / "rooted", columns, base="s3://img/pool")
    assert pq.read_table(staged.files)["path"].to_pylist()[0] == "s3://img/pool/faces/1.jpg"


def test_manifest_errors_on_s3_are_one_line(s3, tmp_path):
    from scoring.manifest import read_header

    s3.bucket("quiet")
    with pytest.raises(UsageError, match=r"manifest s3://quiet/none.csv does not exist"):
        read_header("s3://quiet/none.csv", s3.storage())
    dead = StorageOptions.parse([f"endpoint_override=http://127.0.0.1:{_closed_port()}"])
    with pytest.raises(
        UsageError,
        match=r"cannot use manifest s3://quiet/m.csv \(endpoint http://127.0.0.1:\d+, .*Could(n't| not) connect.*; check --storage-option",
    ):
        read_header("s3://quiet/m.csv", dead)
    with pytest.raises(UsageError, match=r"cannot use the images in s3://quiet/x.jpg .*connect"):
        check_reachable("s3://quiet/x.jpg", dead, "the images in")


def test_decode_reads_objects_and_makes_row_errors(s3, tmp_path):
    s3.bucket("imgs")
    face = write_faces(tmp_path, 1)[0].read_bytes()
    s3.put("imgs/ok.jpg", face)
    s3.put("imgs/empty.jpg", b"")
    s3.put("imgs/slow.jpg", face)
    s3.relay.delays[b"/imgs/slow.jpg"] = 3.0
    try:
        paths = [f"s3://imgs/{k}" for k in ("ok.jpg", "missing.jpg", "empty.jpg", "slow.jpg")]
        reads = RemoteReads(s3.storage(), concurrency=4, timeout=1.0)
        out = decode_paths(
            [*paths, "s3://nobucket-here/x.jpg", "s3://imgs"], [(32, Framing())], reads=reads
        )
    finally:
        del s3.relay.delays[b"/imgs/slow.jpg"]
    assert out.ok.tolist() == [True, False, False, False, False, False]
    assert out.codes[1:] == ["not_found", "empty", "timeout", "not_found", "not_a_file"]
    assert "within 1 s" in out.messages[3]
    dead = RemoteReads(
        StorageOptions.parse([f"endpoint_override=http://127.0.0.1:{_closed_port()}"])
    )
    with pytest.raises(StorageUnreachable, match="cannot read s3://imgs/ok.jpg: .*connect"):
        decode_paths(["s3://imgs/ok.jpg"], [(32, Framing())], reads=dead)
    assert isinstance(ImageError(ErrorCode.TIMEOUT, "x"), ImageError)


def _parts(fs, prefix: str, run_id: str, rows: list[list[int]]) -> list[str]:
    paths = []
    for i, r in enumerate(rows):
        path = f"{prefix}/part-{run_id}-w{i}-000000-0.parquet"
        pq.write_table(pa.table({"row": pa.array(r, pa.int64())}), path, filesystem=fs)
        paths.append(path)
    return paths


def test_the_commit_protocol_lists_exactly_the_committed_parts(s3):
    s3.bucket("out")
    fs = s3.filesystem()
    layout = open_layout("s3://out/scores/run_date=2026-11-27", s3.storage())
    assert isinstance(layout, ObjectStoreLayout)
    layout.check_out_free()
    assert read_committed(layout.final, s3.storage()) is None
    with layout.locked():
        state = RunState(job_key="k", run_id="run1", created_at="now")
        layout.save_state(state)
        assert layout.load_state() == state
        # a crashed attempt of another run left a part: never this run's, never listed
        _parts(fs, layout.path, "other", [[0, 1]])
        mine = _parts(fs, layout.path, "run1", [[0, 1, 2], [2, 3]])
        assert layout.part_files() == mine
        assert layout.done_rows().tolist() == [0, 1, 2, 3]
        check = verify_parts(layout.part_files(), 4, filesystem=fs)
        assert check.duplicates_removed == 1 and check.file_rows == [3, 1]
        assert read_committed(layout.final, s3.storage()) is None  # nothing before _SUCCESS
        layout.commit({"run_id": "run1"}, parts=check)
    committed = read_committed(layout.final, s3.storage())
    assert committed is not None and committed.files == mine
    listing = json.loads(fs.open_input_stream(f"{layout.path}/_manifest.json").read())
    assert [f["rows"] for f in listing["files"]] == [3, 1] and listing["rows"] == 4
    assert pq.read_table(committed.files, filesystem=fs)["row"].to_pylist() == [0, 1, 2, 3]
    left = {i.base_name for i in fs.get_file_info(pa.fs.FileSelector(layout.path))}
    assert left == {p.rsplit("/", 1)[1] for p in mine} | {
        "_manifest.json",
        "_summary.json",
        "_SUCCESS",
    }
    assert fs.get_file_info(layout.staging_path).type == pa.fs.FileType.NotFound
    # a stray part written after the commit (a zombie writer) is not read
    _parts(fs, layout.path, "zombie", [[0, 1, 2, 3]])
    assert read_committed(layout.final, s3.storage()).files == mine


def test_a_second_writer_is_refused_while_the_lease_is_held(s3):
    s3.bucket("leased")
    first = ObjectStoreLayout("s3://leased/scores/run_date=2026-11-27", s3.storage())
    second = ObjectStoreLayout("s3://leased/scores/run_date=2026-11-27", s3.storage())
    with first.locked():
        with pytest.raises(UsageError, match=r"another run is writing s3://leased/scores/run_date"):
            with second.locked():
                pass
    with second.locked():  # released: free again
        pass


def test_out_is_checked_before_any_work(s3, tmp_path):
    s3.bucket("busy")
    s3.put("busy/scores/run_date=2026-11-27/notes.txt", b"someone else's")
    with pytest.raises(
        UsageError, match=r"already holds objects that are not a scoring output \(notes.txt\)"
    ):
        open_layout("s3://busy/scores/run_date=2026-11-27", s3.storage()).check_out_free()
    with pytest.raises(UsageError, match=r"--out s3://busy: name a prefix inside the bucket"):
        open_layout("s3://busy", s3.storage())
    dead = StorageOptions.parse([f"endpoint_override=http://127.0.0.1:{_closed_port()}"])
    with pytest.raises(UsageError, match=r"cannot use --out s3://busy/x \(endpoint .*connect"):
        open_layout("s3://busy/x", dead).check_out_free()


def test_readers_follow_the_listing_of_local_outputs_too(tmp_path):
    from ensemble.scores import read_scores
    from scoring.layout import RunLayout

    layout = RunLayout(tmp_path / "out")
    layout.reset()
    meta = {b"genderscore": json.dumps({"models": [_model()]}).encode()}
    schema = pa.schema(
        [("row", pa.int64()), ("status", pa.string()), ("p_m", pa.float32())], metadata=meta
    )
    for i in range(2):
        t = pa.table({"row": [i], "status": ["ok"], "p_m": [0.5]}, schema=schema)
        pq.write_table(t, layout.parts / f"part-{i}.parquet")
    layout.commit({"run_id": "r"}, parts=verify_parts(layout.part_files(), 2))
    assert json.loads((layout.final / "_manifest.json").read_text())["rows"] == 2
    stray = pa.table({"row": [0], "status": ["ok"], "p_m": [0.1]}, schema=schema)
    pq.write_table(stray, layout.final / "part-stray.parquet")
    assert read_scores(layout.final).table.num_rows == 2


def _model() -> dict:
    return {
        "name": "m",
        "path": "m.onnx",
        "sha256": "0" * 64,
        "input_size": [32, 32],
        "class_names": ["female", "male"],
        "positive_class": "male",
    }


def _closed_port() -> int:
    from s3_support import free_port

    return free_port()


def test_staged_rows_and_done_rows_ignore_unreadable_parts(s3):
    s3.bucket("torn")
    fs = s3.filesystem()
    layout = ObjectStoreLayout("s3://torn/scores/run_date=2026-11-27", s3.storage())
    with layout.locked():
        layout.save_state(RunState(job_key="k", run_id="r9", created_at="now"))
        _parts(fs, layout.path, "r9", [[5, 6]])
        with fs.open_output_stream(f"{layout.path}/part-r9-torn-000001-0.parquet") as fh:
            fh.write(b"PAR1 not a footer")
        assert layout.done_rows().tolist() == [5, 6]
        assert len(layout.part_files()) == 1  # the torn part is gone, its rows scored again
    assert not Path(layout.todo).exists()  # the local staging of the rows is removed


def test_credentials_from_an_aws_profile(s3, tmp_path, monkeypatch):
    """With access checked: a profile's keys (``AWS_PROFILE`` and the AWS files, no key in the
    environment) reach one bucket and are refused the other."""
    from scoring.manifest import read_header

    for bucket in ("prof-open", "prof-closed"):
        s3.bucket(bucket)
        s3.put(f"{bucket}/m.csv", b"path\na.jpg\n")
    key, secret = s3.user_for("prof-open")
    (tmp_path / "credentials").write_text(
        f"[reader]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    (tmp_path / "config").write_text("[profile reader]\nregion = us-east-1\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "reader")
    with s3.enforcing_access():
        assert read_header("s3://prof-open/m.csv", s3.storage()) == ["path"]
        with pytest.raises(UsageError, match=r"manifest s3://prof-closed/m.csv: permission denied"):
            read_header("s3://prof-closed/m.csv", s3.storage())
