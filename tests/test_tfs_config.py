"""TF Serving's config files and flags: models.config, batching parameters,
`ringserve migrate`, and `ringserve serve` with tensorflow_model_server's flags."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from ringserve.client import Client
from ringserve.runtime.config import ConfigError, VersionPolicy, load
from ringserve.runtime.launch import ServerProcess, free_port
from ringserve.runtime.tfserving import flags

from models import reference

# Written the way TF Serving's users write it (single quotes, the `config` blocks,
# a version policy, labels, logging).
ARTICLE = """model_config_list {
  config {
    name: 'linear'
    base_path: '%(root)s/linear'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 1
      }
    }
    version_labels {
      key: 'production'
      value: 1
    }
    logging_config {
      log_collector_config {
        type: 'file'
        filename_prefix: '/tmp/log'
      }
    }
  }
  config {
    name: 'ints'
    base_path: '%(root)s/ints'
    model_platform: 'tensorflow'
    model_version_policy {
      latest {
        num_versions: 2
      }
    }
  }
  config {
    name: 'strings'
    base_path: 'strings'
    model_platform: 'tensorflow'
    model_version_policy { all {} }
  }
}
"""

# The other spellings found in the wild: version_policy, model_thread_pool_size.
SPELLINGS = """model_config_list {
  config {
    name: "pooled"
    base_path: "%(root)s/linear"
    model_platform: "tensorflow"
    version_policy { latest { num_versions: 2 } }
    model_thread_pool_size: 4
  }
  config {
    name: "old_enum"
    base_path: "%(root)s/ints"
    version_policy: ALL_VERSIONS
  }
}
"""

BATCHING = """max_batch_size { value: 16 }
batch_timeout_micros { value: 500 }
max_enqueued_batches { value: 20 }
num_batch_threads { value: 4 }
allowed_batch_sizes: 4
allowed_batch_sizes: 16
pad_variable_length_inputs: true
"""


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    return p


def test_article_models_config(model_root: Path, tmp_path: Path) -> None:
    # base_path 'strings' is relative: relative to the models.config's folder.
    (tmp_path / "strings").symlink_to(model_root / "strings")
    write(tmp_path, "models.config", ARTICLE % {"root": model_root})
    toml = write(
        tmp_path,
        "server.toml",
        f'[server]\nmodel_config_file = "models.config"\n\n'
        f'[[models]]\nname = "slow"\nbase_path = "{model_root / "slow"}"\n',
    )
    cfg = load(toml)
    m = {x.name: x for x in cfg.models}
    assert list(m) == ["slow", "linear", "ints", "strings"]
    assert m["linear"].version_policy == VersionPolicy("specific", specific=(1,))
    assert m["linear"].version_labels == (("production", 1),)
    assert m["ints"].version_policy == VersionPolicy("latest", latest=2)
    assert m["strings"].version_policy == VersionPolicy("all")
    assert m["strings"].base_path == tmp_path / "strings"
    assert any("logging_config" in n and "ignored" in n for n in cfg.notes)


def test_article_spellings(model_root: Path, tmp_path: Path) -> None:
    mc = write(tmp_path, "models.config", SPELLINGS % {"root": model_root})
    toml = write(tmp_path, "s.toml", f'[server]\nmodel_config_file = "{mc}"\n')
    m = {x.name: x for x in load(toml).models}
    assert m["pooled"].version_policy == VersionPolicy("latest", latest=2)
    assert (m["pooled"].instances.intra_op_threads, m["pooled"].instances.inter_op_threads) == (
        4,
        1,
    )
    assert m["old_enum"].version_policy == VersionPolicy("all")


@pytest.mark.parametrize(
    "text, where, needle",
    [
        (
            "model_config_list {\n  config {\n    name: 'a'\n    bsae_path: '/x'\n",
            ":4:5:",
            "bsae_path",
        ),
        ("model_config_list {\n  config {\n    name: 'a'\n", ":3:11:", "}"),
        (
            "model_config_list { config { name: 'a' base_path: '/' model_platform: 'onnx' } }",
            "",
            'model_platform: expected "tensorflow"',
        ),
        ("model_config_list { config { base_path: '/' } }", "", "name"),
    ],
)
def test_models_config_errors_name_file_line_column(
    tmp_path: Path, text: str, where: str, needle: str
) -> None:
    mc = write(tmp_path, "models.config", text)
    toml = write(tmp_path, "s.toml", '[server]\nmodel_config_file = "models.config"\n')
    with pytest.raises(ConfigError) as ei:
        load(toml)
    msg = str(ei.value)
    assert msg.startswith(f"{mc}{where}"), msg
    assert needle in msg


def test_same_model_in_both_is_an_error(model_root: Path, tmp_path: Path) -> None:
    write(tmp_path, "models.config", ARTICLE % {"root": model_root})
    toml = write(
        tmp_path,
        "s.toml",
        f'[server]\nmodel_config_file = "models.config"\n\n'
        f'[[models]]\nname = "ints"\nbase_path = "{model_root / "ints"}"\n',
    )
    with pytest.raises(ConfigError, match="'ints' is defined both in"):
        load(toml)


def test_batching_parameters_apply_to_every_model(model_root: Path, tmp_path: Path) -> None:
    write(tmp_path, "batching.txt", BATCHING)
    toml = write(
        tmp_path,
        "s.toml",
        '[server]\nbatching_parameters_file = "batching.txt"\n\n'
        f'[[models]]\nname = "linear"\nbase_path = "{model_root / "linear"}"\n\n'
        f'[[models]]\nname = "ints"\nbase_path = "{model_root / "ints"}"\n'
        "  [models.batching]\n  max_batch_size = 2\n",
    )
    cfg = load(toml)
    lin, ints = cfg.models
    assert lin.batching is not None and ints.batching is not None
    assert lin.batching.max_batch_size == 16 and lin.batching.batch_timeout_us == 500
    assert lin.batching.allowed_batch_sizes == (4, 16)
    assert lin.batching.max_queue == lin.max_queue == 20 * 16  # batches x batch size
    assert ints.batching.max_batch_size == 2  # its own table wins
    assert any("num_batch_threads" in n for n in cfg.notes)
    assert any("pad_variable_length_inputs" in n for n in cfg.notes)
    # enable_batching without a file: TF Serving's defaults.
    toml2 = write(
        tmp_path,
        "d.toml",
        f'[server]\nenable_batching = true\n\n[[models]]\nname = "linear"\n'
        f'base_path = "{model_root / "linear"}"\n',
    )
    (m,) = load(toml2).models
    assert m.batching is not None
    assert (m.batching.max_batch_size, m.batching.batch_timeout_us, m.batching.max_queue) == (
        1000,
        0,
        10000,
    )
    write(tmp_path, "bad.txt", "max_batch_size: 16\n")
    bad = write(tmp_path, "b.toml", '[server]\nbatching_parameters_file = "bad.txt"\n')
    with pytest.raises(ConfigError, match=r"bad.txt:1:\d+:"):
        load(bad)


def test_migrate_output_passes_check_config(model_root: Path, tmp_path: Path) -> None:
    (tmp_path / "strings").symlink_to(model_root / "strings")
    mc = write(tmp_path, "models.config", ARTICLE % {"root": model_root})
    bp = write(tmp_path, "batching.txt", BATCHING)
    ringserve = [sys.executable, "-m", "ringserve"]
    out = subprocess.run(
        [*ringserve, "migrate", str(mc), "--batching_parameters_file", str(bp)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for field in (
        "model_version_policy",
        "version_labels",
        "logging_config",
        "max_enqueued_batches",
        "num_batch_threads",
        "pad_variable_length_inputs",
        "model_platform",
    ):
        assert f"# {field}:" in out.stdout, field
    migrated = write(tmp_path, "migrated.toml", out.stdout)
    check = subprocess.run(
        [*ringserve, "check-config", str(migrated)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    direct = write(
        tmp_path,
        "direct.toml",
        '[server]\nmodel_config_file = "models.config"\n'
        'batching_parameters_file = "batching.txt"\n',
    )
    assert load(migrated).models == load(direct).models


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    flags.add_arguments(p)
    return p.parse_args(argv)


def test_flags_without_config_take_tf_servings_defaults(tmp_path: Path) -> None:
    raw: dict = {}
    log, threads = flags.apply(
        raw,
        _args(
            [
                "--model_name=m",
                f"--model_base_path={tmp_path}",
                "--rest_api_port=8501",
                "--batching_parameters_file=b.txt",
                "--tensorflow_intra_op_parallelism=2",
                "--rest_api_num_threads=8",
            ]
        ),
        from_file=False,
    )
    assert raw["server"] == {"tcp": "0.0.0.0:8500", "unix": "", "http": "0.0.0.0:8501"}
    assert raw["models"] == [{"name": "m", "base_path": str(tmp_path)}]
    assert threads == {"intra_op_threads": 2}
    assert any("without --enable_batching" in line for line in log)
    assert any("--rest_api_num_threads" in line for line in log)


class FlagServer(ServerProcess):
    def __init__(self, extra: list[str], **kw: object) -> None:
        super().__init__("", "ring_bytes = 1048576", **kw)  # type: ignore[arg-type]
        self.extra = extra

    def argv(self) -> list[str]:
        return [*super().argv(), *self.extra]


def test_serve_with_tf_serving_flags(model_root: Path, tmp_path: Path) -> None:
    mc = write(
        tmp_path,
        "models.config",
        f"model_config_list {{ config {{ name: 'viaconfig' base_path: '{model_root / 'ints'}' "
        "model_platform: 'tensorflow' } }",
    )
    rest_port, port = free_port(), free_port()
    srv = FlagServer(
        [
            "--model_name=lin",
            f"--model_base_path={model_root / 'linear'}",
            f"--model_config_file={mc}",
            f"--rest_api_port={rest_port}",
            f"--port={port}",
            "--enable_batching",
        ]
    )
    with srv:
        x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
        r = requests.post(
            f"http://127.0.0.1:{rest_port}/v1/models/lin:predict",
            json={"instances": x.tolist()},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        want = reference(model_root / "linear", {"x": x})["y"]
        np.testing.assert_allclose(np.array(r.json()["predictions"]), want, rtol=1e-6)
        with Client(f"tcp://127.0.0.1:{port}") as c:  # --port: the msgpack listener
            out = c.infer(
                "viaconfig", {"a": np.ones((1, 3), np.int64), "b": np.ones((1, 3), np.int64)}
            )
            assert out["sum"].tolist() == [[2, 2, 2]]
            assert {m["name"] for m in c.models()} == {"lin", "viaconfig"}
            # SIGHUP reads the files again, with the same flags.
            mc.write_text(
                mc.read_text().replace(
                    "} }", f"}} config {{ name: 'added' base_path: '{model_root / 'linear'}' }} }}"
                )
            )
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 60
            while "added" not in {m["name"] for m in c.models()}:
                assert time.monotonic() < deadline, "the reload did not add the model"
                time.sleep(0.05)
