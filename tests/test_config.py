"""Pure-logic tests of the config loader (runtime/config.py) and `ringserve check-config`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringserve.runtime.config import (
    Batching,
    Config,
    ConfigError,
    Instances,
    ServerConfig,
    VersionPolicy,
    WorkerOverride,
    list_versions,
    load,
    parse,
)

NCPU = os.cpu_count() or 1


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models" / "mlp"
    for v in ("1", "2", "10"):
        (d / v).mkdir(parents=True)
    (d / "notaversion").mkdir()
    (d / "3").write_text("a file, not a version folder")
    return d


def write(tmp_path: Path, text: str, name: str = "ringserve.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def model_toml(base: Path, name: str = "mlp", extra: str = "") -> str:
    return f'[[models]]\nname = "{name}"\nbase_path = "{base}"\n{extra}\n'


# ---- a full config -------------------------------------------------------------------


def test_full_config_every_documented_key(tmp_path: Path, model_dir: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    path = write(
        tmp_path,
        f"""
[server]
tcp = "127.0.0.1:8700"
unix = "/run/ringserve/ringserve.sock"
max_frame_bytes = 268435456
metrics = "127.0.0.1:8702"
auth_token_file = "{token}"
unix_mode = 0o600
name = "prod-1"
ring_bytes = 8388608
max_inflight_per_connection = 64
worker_inflight = 3
default_timeout_ms = 2500
grace_seconds = 12.5
heartbeat_timeout_seconds = 30
version_poll_seconds = 0
worker_start_timeout_seconds = 60.0
max_spin_us = 0
max_connections = 100
max_frame_bytes_before_auth = 4096
handshake_timeout_seconds = 5
frame_timeout_seconds = 0
max_tensor_rank = 8

[[models]]
name = "mlp"
base_path = "{model_dir}"
version_policy = "latest"

  [models.instances]
  count = 2
  devices = ["cpu"]
  intra_op_threads = 1
  inter_op_threads = 1
  cpu_affinity = [[0], "0"]
  gpu_memory_mb = 512
  gpu_memory_fraction = 0.5

  [[models.instances.workers]]
  device = "gpu:1"
  intra_op_threads = 4
  inter_op_threads = 0
  cpu_affinity = "0-0"

  [models.batching]
  max_batch_size = 32
  batch_timeout_us = 1000
  allowed_batch_sizes = [4, 8, 32]
  max_queue = 1024

[[models]]
name = "other.v2_x"
base_path = "models/mlp"
version_policy = {{specific = [1, 3]}}
max_queue = 7

[[models]]
name = "third"
base_path = "{model_dir}"
version_policy = {{latest = 2}}
instances = {{devices = ["gpu:0", "gpu:1"], cpu_affinity = [0]}}

[[models]]
name = "fourth"
base_path = "{model_dir}"
version_policy = "all"
""",
    )
    cfg = load(path)
    assert cfg.path == str(path)
    assert cfg.server == ServerConfig(
        tcp="127.0.0.1:8700",
        unix="/run/ringserve/ringserve.sock",
        unix_mode=0o600,
        max_frame_bytes=268435456,
        metrics="127.0.0.1:8702",
        auth_token_file=str(token),
        name="prod-1",
        ring_bytes=8388608,
        max_inflight_per_connection=64,
        worker_inflight=3,
        default_timeout_ms=2500,
        grace_seconds=12.5,
        heartbeat_timeout_seconds=30.0,
        version_poll_seconds=0.0,
        worker_start_timeout_seconds=60.0,
        max_spin_us=0,
        max_connections=100,
        max_frame_bytes_before_auth=4096,
        handshake_timeout_seconds=5.0,
        frame_timeout_seconds=0.0,
        max_tensor_rank=8,
    )
    assert isinstance(cfg.server.heartbeat_timeout_seconds, float)
    mlp, other, third, fourth = cfg.models
    assert mlp.name == "mlp" and mlp.base_path == model_dir
    assert mlp.version_policy == VersionPolicy("latest")
    assert mlp.instances == Instances(
        count=2,
        devices=("cpu",),
        intra_op_threads=1,
        inter_op_threads=1,
        cpu_affinity=((0,), (0,)),
        gpu_memory_mb=512,
        gpu_memory_fraction=0.5,
        workers=(
            WorkerOverride(
                device="gpu:1", intra_op_threads=4, inter_op_threads=0, cpu_affinity=(0,)
            ),
        ),
    )
    assert mlp.batching == Batching(
        max_batch_size=32, batch_timeout_us=1000, allowed_batch_sizes=(4, 8, 32), max_queue=1024
    )
    assert mlp.max_queue == 1024
    # a relative base_path is relative to the config file
    assert other.base_path == tmp_path / "models" / "mlp"
    assert other.version_policy == VersionPolicy("specific", specific=(1, 3))
    assert other.instances == Instances() and other.batching is None and other.max_queue == 7
    assert third.version_policy == VersionPolicy("latest", latest=2)
    assert third.instances.devices == ("gpu:0", "gpu:1")
    assert third.instances.cpu_affinity == ((0,),)  # a flat list: one set for all workers
    assert fourth.version_policy == VersionPolicy("all")


def test_no_server_table_gives_documented_defaults(tmp_path: Path, model_dir: Path) -> None:
    cfg = load(write(tmp_path, model_toml(model_dir)))
    s = cfg.server
    assert s == ServerConfig()
    # the defaults configs/README.md documents
    assert s.tcp == "127.0.0.1:8700"
    assert s.unix == "/run/ringserve/ringserve.sock"
    assert s.unix_mode == 0o660
    assert s.max_frame_bytes == 268435456
    assert s.metrics == "" and s.auth_token_file == ""
    assert s.name == "default"
    assert s.ring_bytes == 67108864
    assert (s.max_inflight_per_connection, s.worker_inflight) == (1024, 2)
    assert (s.default_timeout_ms, s.max_spin_us) == (0, 1000)
    assert (s.grace_seconds, s.heartbeat_timeout_seconds) == (30.0, 60.0)
    assert (s.version_poll_seconds, s.worker_start_timeout_seconds) == (5.0, 120.0)
    assert (s.group_load_retries, s.group_load_retry_seconds) == (5, 60.0)
    assert (s.max_connections, s.max_frame_bytes_before_auth, s.max_tensor_rank) == (256, 8192, 32)
    assert (s.handshake_timeout_seconds, s.frame_timeout_seconds) == (10.0, 60.0)
    (m,) = cfg.models
    assert m.version_policy == VersionPolicy("latest")
    assert m.instances == Instances(count=1, devices=("cpu",), intra_op_threads=1)
    assert m.instances.cpu_affinity == () and m.instances.workers == ()
    assert m.batching is None and m.max_queue == 1024


def test_empty_batching_table_gets_defaults(tmp_path: Path, model_dir: Path) -> None:
    cfg = load(write(tmp_path, model_toml(model_dir, extra="[models.batching]")))
    assert cfg.models[0].batching == Batching()


def test_empty_file_and_server_only(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")).models == ()
    cfg = load(write(tmp_path, '[server]\ntcp = ""\n', "b.toml"))
    assert cfg.server.tcp == "" and cfg.server.unix == ServerConfig().unix
    assert parse({}) == Config(path="<config>")


# ---- refusals ------------------------------------------------------------------------

M0 = "models[0]"
BAD = [
    # unknown keys, at every level
    ("bogus = 1", "bogus"),
    ("[server]\nbogus = 1", "server.bogus"),
    ("[server]\nTCP = '127.0.0.1:1'", "server.TCP"),
    ("@MODEL\nbogus = 1", f"{M0}.bogus"),
    ("@MODEL\n[models.instances]\nbogus = 1", f"{M0}.instances.bogus"),
    ("@MODEL\n[models.instances]\ndevice = 'cpu'", f"{M0}.instances.device"),
    ("@MODEL\n[models.batching]\nbogus = 1", f"{M0}.batching.bogus"),
    ("@MODEL\n[models.batching]\ntimeout_us = 1", f"{M0}.batching.timeout_us"),
    ("@MODEL\n[[models.instances.workers]]\nbogus = 1", f"{M0}.instances.workers[0].bogus"),
    # wrong types
    ("[server]\nmax_frame_bytes = '1024'", "server.max_frame_bytes"),
    ("[server]\ngroup_load_retries = -1", "server.group_load_retries"),
    ("[server]\ngroup_load_retry_seconds = 'soon'", "server.group_load_retry_seconds"),
    ("[server]\nmax_frame_bytes = true", "server.max_frame_bytes"),
    ("[server]\nmax_frame_bytes = 1024.0", "server.max_frame_bytes"),
    ("[server]\ntcp = 8700", "server.tcp"),
    ("[server]\nunix = false", "server.unix"),
    ("[server]\nmetrics = ['127.0.0.1:1']", "server.metrics"),
    ("[server]\ngrace_seconds = '30'", "server.grace_seconds"),
    ("[server]\ngrace_seconds = true", "server.grace_seconds"),
    ("[server]\nname = 5", "server.name"),
    ("server = 5", "server"),
    ("[models]\nname = 'x'", "models"),
    ("models = 'x'", "models"),
    ("@MODEL\n[models.instances]\ncount = '2'", f"{M0}.instances.count"),
    ("@MODEL\n[models.instances]\ncount = true", f"{M0}.instances.count"),
    ("@MODEL\n[models.instances]\ncount = 2.0", f"{M0}.instances.count"),
    ("@MODEL\n[models.instances]\nintra_op_threads = '1'", f"{M0}.instances.intra_op_threads"),
    ("@MODEL\n[models.instances]\ninter_op_threads = false", f"{M0}.instances.inter_op_threads"),
    ("@MODEL\n[models.instances]\ndevices = 'cpu'", f"{M0}.instances.devices"),
    ("@MODEL\n[models.instances]\ndevices = [0]", f"{M0}.instances.devices"),
    ("@MODEL\n[models.instances]\ncpu_affinity = 0", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\n[models.instances]\ncpu_affinity = [true]", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\n[models.instances]\ncpu_affinity = [[1.5]]", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\ninstances = 3", f"{M0}.instances"),
    ("@MODEL\nbatching = true", f"{M0}.batching"),
    ("@MODEL\n[models.batching]\nmax_batch_size = '32'", f"{M0}.batching.max_batch_size"),
    ("@MODEL\n[models.batching]\nmax_batch_size = true", f"{M0}.batching.max_batch_size"),
    ("@MODEL\n[models.batching]\nallowed_batch_sizes = 8", f"{M0}.batching.allowed_batch_sizes"),
    ("@MODEL\n[models.batching]\nbatch_timeout_us = 1.5", f"{M0}.batching.batch_timeout_us"),
    ("@MODEL\n[models.batching]\nmax_queue = false", f"{M0}.batching.max_queue"),
    ("@MODEL\nmax_queue = '5'", f"{M0}.max_queue"),
    ("[[models]]\nname = 5\nbase_path = '.'", f"{M0}.name"),
    # impossible values
    ("@MODEL\n[models.instances]\ncount = 0", f"{M0}.instances.count"),
    ("@MODEL\n[models.instances]\ncount = -1", f"{M0}.instances.count"),
    ("@MODEL\n[models.instances]\nintra_op_threads = -1", f"{M0}.instances.intra_op_threads"),
    ("@MODEL\n[models.instances]\ninter_op_threads = -4", f"{M0}.instances.inter_op_threads"),
    ("@MODEL\n[models.instances]\ndevices = []", f"{M0}.instances.devices"),
    ("@MODEL\n[models.instances]\ndevices = ['gpu']", f"{M0}.instances.devices"),
    ("@MODEL\n[models.instances]\ndevices = ['tpu:0']", f"{M0}.instances.devices"),
    (
        "@MODEL\n[models.instances]\ngpu_memory_fraction = 1.5",
        f"{M0}.instances.gpu_memory_fraction",
    ),
    ("@MODEL\n[models.instances]\ngpu_memory_mb = -1", f"{M0}.instances.gpu_memory_mb"),
    (f"@MODEL\n[models.instances]\ncpu_affinity = [{NCPU}]", f"{M0}.instances.cpu_affinity"),
    (f"@MODEL\n[models.instances]\ncpu_affinity = [[0, {NCPU}]]", f"{M0}.instances.cpu_affinity"),
    (f"@MODEL\n[models.instances]\ncpu_affinity = ['0-{NCPU}']", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\n[models.instances]\ncpu_affinity = [[]]", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\n[models.instances]\ncpu_affinity = ['a-b']", f"{M0}.instances.cpu_affinity"),
    ("@MODEL\n[models.instances]\ncpu_affinity = [-1]", f"{M0}.instances.cpu_affinity"),
    (
        "@MODEL\n[models.instances]\ncount = 1\n[[models.instances.workers]]\n"
        "[[models.instances.workers]]",
        f"{M0}.instances.workers",
    ),
    ("[server]\ntcp = '127.0.0.1:70000'", "server.tcp"),
    ("[server]\ntcp = '127.0.0.1:65536'", "server.tcp"),
    ("[server]\ntcp = '127.0.0.1'", "server.tcp"),
    ("[server]\ntcp = ':8700'", "server.tcp"),
    ("[server]\ntcp = '127.0.0.1:-1'", "server.tcp"),
    ("[server]\nmetrics = 'localhost:http'", "server.metrics"),
    ("[server]\ntcp = ''\nunix = ''", "server.tcp"),
    ("[server]\nmax_frame_bytes = 0", "server.max_frame_bytes"),
    ("[server]\nring_bytes = 100000", "server.ring_bytes"),
    ("[server]\nring_bytes = 4096", "server.ring_bytes"),
    ("[server]\nworker_inflight = 0", "server.worker_inflight"),
    ("[server]\nunix_mode = 0o1777", "server.unix_mode"),
    ("[server]\ngrace_seconds = -1.0", "server.grace_seconds"),
    # NaN and infinities, in every float key (NaN passes `< 0` checks)
    ("[server]\ngrace_seconds = nan", "server.grace_seconds"),
    ("[server]\nheartbeat_timeout_seconds = inf", "server.heartbeat_timeout_seconds"),
    ("[server]\nversion_poll_seconds = -nan", "server.version_poll_seconds"),
    ("[server]\nworker_start_timeout_seconds = +inf", "server.worker_start_timeout_seconds"),
    ("[server]\nhandshake_timeout_seconds = nan", "server.handshake_timeout_seconds"),
    ("[server]\nframe_timeout_seconds = inf", "server.frame_timeout_seconds"),
    (
        "@MODEL\n[models.instances]\ngpu_memory_fraction = nan",
        f"{M0}.instances.gpu_memory_fraction",
    ),
    # input limits
    ("[server]\nmax_connections = 0", "server.max_connections"),
    ("[server]\nmax_connections = 1.5", "server.max_connections"),
    ("[server]\nmax_frame_bytes_before_auth = 10", "server.max_frame_bytes_before_auth"),
    ("[server]\nmax_tensor_rank = 33", "server.max_tensor_rank"),
    ("[server]\nmax_tensor_rank = -1", "server.max_tensor_rank"),
    ("[server]\nhandshake_timeout_seconds = -1", "server.handshake_timeout_seconds"),
    ("[server]\nframe_timeout_seconds = 'x'", "server.frame_timeout_seconds"),
    ("[server]\nname = 'has space'", "server.name"),
    ("[server]\nname = ''", "server.name"),
    ("[server]\nauth_token_file = '/nonexistent/token'", "server.auth_token_file"),
    ("@MODEL\n[models.batching]\nmax_batch_size = 0", f"{M0}.batching.max_batch_size"),
    ("@MODEL\n[models.batching]\nmax_queue = 0", f"{M0}.batching.max_queue"),
    ("@MODEL\nmax_queue = 0", f"{M0}.max_queue"),
    (
        "@MODEL\n[models.batching]\nmax_batch_size = 32\nallowed_batch_sizes = [8, 4, 32]",
        f"{M0}.batching.allowed_batch_sizes",
    ),
    (
        "@MODEL\n[models.batching]\nmax_batch_size = 32\nallowed_batch_sizes = [4, 4, 32]",
        f"{M0}.batching.allowed_batch_sizes",
    ),
    (
        "@MODEL\n[models.batching]\nmax_batch_size = 32\nallowed_batch_sizes = [4, 8]",
        f"{M0}.batching.allowed_batch_sizes",
    ),
    (
        "@MODEL\n[models.batching]\nmax_batch_size = 32\nallowed_batch_sizes = [4, 64]",
        f"{M0}.batching.allowed_batch_sizes",
    ),
    (
        "@MODEL\n[models.batching]\nallowed_batch_sizes = [0, 32]",
        f"{M0}.batching.allowed_batch_sizes",
    ),
    # models
    ("[[models]]\nbase_path = '.'", f"{M0}.name"),
    ("[[models]]\nname = 'x'", f"{M0}.base_path"),
    ("[[models]]\nname = 'x y'\nbase_path = '.'", f"{M0}.name"),
    ("[[models]]\nname = '-x'\nbase_path = '.'", f"{M0}.name"),
    ("[[models]]\nname = 'x'\nbase_path = 'no/such/folder'", f"{M0}.base_path"),
    ("[[models]]\nname = 'x'\nbase_path = '@FILE'", f"{M0}.base_path"),
    ("[[models]]\nname = 'x'\nbase_path = 3", f"{M0}.base_path"),
    ("@MODEL\n@MODEL", "models.name"),
    ("@MODEL\n[[models]]\nname = 'y'\nbase_path = '.'\n@MODEL", "models.name"),
    ("[[models]]\nname = 'a'\nbase_path = '.'\n[[models]]\nbase_path = 3", "models[1].name"),
    # version policies
    ("@MODEL\nversion_policy = 'newest'", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = 'LATEST'", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = 2", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = ['latest']", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = {}", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = {latest = 0}", f"{M0}.version_policy.latest"),
    ("@MODEL\nversion_policy = {latest = '2'}", f"{M0}.version_policy.latest"),
    ("@MODEL\nversion_policy = {latest = true}", f"{M0}.version_policy.latest"),
    ("@MODEL\nversion_policy = {specific = []}", f"{M0}.version_policy.specific"),
    ("@MODEL\nversion_policy = {specific = 1}", f"{M0}.version_policy.specific"),
    ("@MODEL\nversion_policy = {specific = [0]}", f"{M0}.version_policy.specific"),
    ("@MODEL\nversion_policy = {specific = ['1']}", f"{M0}.version_policy.specific"),
    ("@MODEL\nversion_policy = {all = true}", f"{M0}.version_policy"),
    ("@MODEL\nversion_policy = {latest = 1, specific = [1]}", f"{M0}.version_policy"),
]


def _materialise(tmp_path: Path, text: str, model_dir: Path) -> Path:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    text = text.replace("@MODEL", model_toml(model_dir).strip())
    text = text.replace("@FILE", str(a_file))
    return write(tmp_path, text)


@pytest.mark.parametrize("text, key", BAD, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD)])
def test_refused_with_path_and_key(tmp_path: Path, model_dir: Path, text: str, key: str) -> None:
    path = _materialise(tmp_path, text, model_dir)
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert f"'{key}" in msg, msg
    assert "\n" not in msg


def test_refusal_says_expected_and_received(tmp_path: Path, model_dir: Path) -> None:
    path = write(tmp_path, model_toml(model_dir, extra="[models.instances]\ncount = 'two'"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "expected an integer" in str(info.value) and "'two'" in str(info.value)
    path = write(tmp_path, "[server]\ntcp = 'h:70000'")
    with pytest.raises(ConfigError, match=r"expected \"host:port\" or \"\", received 'h:70000'"):
        load(path)
    path = write(tmp_path, model_toml(model_dir, extra="[models.instances]\nbogus = 1"))
    with pytest.raises(ConfigError, match="unknown key; expected one of"):
        load(path)


def test_duplicate_model_names_name_the_model(tmp_path: Path, model_dir: Path) -> None:
    text = model_toml(model_dir, "a") + model_toml(model_dir, "b") + model_toml(model_dir, "a")
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert "'models.name'" in str(info.value) and "'a'" in str(info.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"^{re.escape(str(missing))}: file not found"):
        load(missing)
    bad = write(tmp_path, "[server\ntcp = 1")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(bad))}: not valid TOML"):
        load(bad)


@pytest.mark.parametrize("cpuset", ["0,3-1", f"0,{NCPU + 5}-{NCPU + 1}"])
def test_reversed_cpu_range_is_refused(tmp_path: Path, model_dir: Path, cpuset: str) -> None:
    extra = f"[models.instances]\ncpu_affinity = ['{cpuset}']"
    with pytest.raises(ConfigError, match="cpu_affinity"):
        load(write(tmp_path, model_toml(model_dir, extra=extra)))


def test_valid_edge_values(tmp_path: Path, model_dir: Path) -> None:
    text = f"""
[server]
tcp = "[::1]:0"
unix = ""
max_frame_bytes = 64
ring_bytes = 65536
unix_mode = 0o777
{model_toml(model_dir)}
[models.instances]
count = 256
intra_op_threads = 0
inter_op_threads = 0
cpu_affinity = ["0-{NCPU - 1}", {NCPU - 1}, [0, {NCPU - 1}, 0]]
[models.batching]
max_batch_size = 1
allowed_batch_sizes = [1]
batch_timeout_us = 0
max_queue = 1
"""
    cfg = load(write(tmp_path, text))
    assert cfg.server.tcp == "[::1]:0" and cfg.server.unix == ""
    inst = cfg.models[0].instances
    assert inst.count == 256 and inst.intra_op_threads == 0
    assert inst.cpu_affinity == (
        tuple(range(NCPU)),
        (NCPU - 1,),
        tuple(sorted({0, NCPU - 1})),
    )
    assert cfg.models[0].max_queue == 1  # batching.max_queue governs a batching model


# ---- VersionPolicy -------------------------------------------------------------------


def test_version_policy_select() -> None:
    avail = [3, 1, 10, 2]
    assert VersionPolicy("latest").select(avail) == [10]
    assert VersionPolicy("latest", latest=2).select(avail) == [3, 10]
    assert VersionPolicy("latest", latest=9).select(avail) == [1, 2, 3, 10]
    assert VersionPolicy("all").select(avail) == [1, 2, 3, 10]
    assert VersionPolicy("specific", specific=(1, 3)).select(avail) == [1, 3]
    assert VersionPolicy("specific", specific=(3, 4)).select(avail) == [3]
    assert VersionPolicy("specific", specific=(5,)).select(avail) == []
    for p in (VersionPolicy("latest"), VersionPolicy("all"), VersionPolicy("specific", 1, (1,))):
        assert p.select([]) == []


@given(
    st.lists(st.integers(1, 50), unique=True, max_size=12),
    st.integers(1, 15),
    st.lists(st.integers(1, 60), min_size=1, max_size=5),
)
@settings(max_examples=150, deadline=None)
def test_version_policy_properties(avail: list[int], n: int, spec: list[int]) -> None:
    ordered = sorted(avail)
    latest = VersionPolicy("latest", latest=n).select(avail)
    assert latest == ordered[max(0, len(ordered) - n) :]
    assert VersionPolicy("all").select(avail) == ordered
    specific = VersionPolicy("specific", specific=tuple(spec)).select(avail)
    assert specific == [v for v in ordered if v in spec]


@pytest.mark.parametrize(
    "toml, policy, described",
    [
        ('"latest"', VersionPolicy("latest"), "latest"),
        ('"all"', VersionPolicy("all"), "all"),
        ("{latest = 1}", VersionPolicy("latest"), "latest"),
        ("{latest = 3}", VersionPolicy("latest", latest=3), {"latest": 3}),
        ("{specific = [2, 1]}", VersionPolicy("specific", specific=(2, 1)), {"specific": [2, 1]}),
    ],
)
def test_version_policy_parsed(
    tmp_path: Path, model_dir: Path, toml: str, policy: VersionPolicy, described: object
) -> None:
    cfg = load(write(tmp_path, model_toml(model_dir, extra=f"version_policy = {toml}")))
    assert cfg.models[0].version_policy == policy
    assert policy.describe() == described


def test_list_versions(model_dir: Path, tmp_path: Path) -> None:
    assert list_versions(model_dir) == [1, 2, 10]
    assert list_versions(tmp_path / "missing") == []
    policy = load(write(tmp_path, model_toml(model_dir))).models[0].version_policy
    assert policy.select(list_versions(model_dir)) == [10]


# ---- ringserve check-config ----------------------------------------------------------


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringserve", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RINGSERVE_CONFIG": ""},
    )


def test_check_config_good(tmp_path: Path, model_dir: Path) -> None:
    path = write(tmp_path, model_toml(model_dir) + model_toml(model_dir, "second"))
    r = _check_config(path)
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stdout and "2 models" in r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize(
    "extra, key",
    [
        ("[models.instances]\ncount = 0", "models[0].instances.count"),
        ("[models.batching]\nbogus = true", "models[0].batching.bogus"),
    ],
)
def test_check_config_bad(tmp_path: Path, model_dir: Path, extra: str, key: str) -> None:
    path = write(tmp_path, model_toml(model_dir, extra=extra))
    r = _check_config(path)
    assert r.returncode == 2
    assert key in r.stderr and str(path) in r.stderr
    assert r.stdout == ""


def test_check_config_missing_file(tmp_path: Path) -> None:
    r = _check_config(tmp_path / "absent.toml")
    assert r.returncode == 2 and "file not found" in r.stderr


def test_nan_message_names_the_key(tmp_path: Path, model_dir: Path) -> None:
    path = write(tmp_path, "[server]\ngrace_seconds = nan\n" + model_toml(model_dir))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "'server.grace_seconds'" in str(info.value) and "finite" in str(info.value)
    assert "nan" in str(info.value)


def test_token_must_fit_the_frame_before_auth(tmp_path: Path, model_dir: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 5000)
    text = f'[server]\nauth_token_file = "{token}"\nmax_frame_bytes_before_auth = 4096\n'
    with pytest.raises(ConfigError, match=r"server\.max_frame_bytes_before_auth"):
        load(write(tmp_path, text + model_toml(model_dir)))
    text = text.replace("4096", "8192")
    assert load(write(tmp_path, text + model_toml(model_dir))).server.auth_token_file
