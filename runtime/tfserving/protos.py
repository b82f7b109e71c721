"""Message classes for TF Serving's config protos, built at run time.

The descriptors below are written from TF Serving's .proto files with the same
package, message names, field names and numbers (model_server_config.proto,
file_system_storage_path_source.proto, logging_config.proto,
log_collector_config.proto, session_bundle_config.proto's BatchingParameters), so
protobuf's own `text_format` parses the files TF Serving reads; nothing of
TensorFlow is imported. They live in a private descriptor pool, so they never clash
with tensorflow-serving-api's classes in a process that has both.

Two fields TF Serving does not accept, seen in the wild (the article users follow
writes them), are read by a permissive ModelConfig: it has two extra fields at
numbers TF Serving does not use, `version_policy` (a ServableVersionPolicy, like
model_version_policy) and `model_thread_pool_size` (int32). TF Serving's long-removed
enum spelling `version_policy: LATEST_VERSION | ALL_VERSIONS` is rewritten to the
message form before parsing (model_config.py).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

F = descriptor_pb2.FieldDescriptorProto
PKG = "tensorflow.serving"

# Field numbers of the permissive extras: far from anything TF Serving uses.
VERSION_POLICY_FIELD = 1001
THREAD_POOL_FIELD = 1002


def _field(
    msg: Any,
    name: str,
    number: int,
    ftype: int,
    type_name: str = "",
    repeated: bool = False,
    oneof: int | None = None,
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype)
    f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof


def _file(name: str, deps: list[str]) -> Any:
    fd = descriptor_pb2.FileDescriptorProto(name=name, package=PKG, syntax="proto3")
    fd.dependency.extend(deps)
    return fd


def _storage_path_file() -> Any:
    fd = _file("tensorflow_serving/sources/storage_path/file_system_storage_path_source.proto", [])
    src = fd.message_type.add(name="FileSystemStoragePathSourceConfig")
    pol = src.nested_type.add(name="ServableVersionPolicy")
    latest = pol.nested_type.add(name="Latest")
    _field(latest, "num_versions", 1, F.TYPE_UINT32)
    pol.nested_type.add(name="All")
    specific = pol.nested_type.add(name="Specific")
    _field(specific, "versions", 1, F.TYPE_INT64, repeated=True)
    pol.oneof_decl.add(name="policy_choice")
    base = f".{PKG}.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
    _field(pol, "latest", 100, F.TYPE_MESSAGE, f"{base}.Latest", oneof=0)
    _field(pol, "all", 101, F.TYPE_MESSAGE, f"{base}.All", oneof=0)
    _field(pol, "specific", 102, F.TYPE_MESSAGE, f"{base}.Specific", oneof=0)
    enum = src.enum_type.add(name="VersionPolicy")
    enum.value.add(name="LATEST_VERSION", number=0)
    enum.value.add(name="ALL_VERSIONS", number=1)
    return fd


def _logging_file() -> Any:
    fd = _file("tensorflow_serving/config/logging_config.proto", [])
    collector = fd.message_type.add(name="LogCollectorConfig")
    _field(collector, "type", 1, F.TYPE_STRING)
    _field(collector, "filename_prefix", 2, F.TYPE_STRING)
    sampling = fd.message_type.add(name="SamplingConfig")
    _field(sampling, "sampling_rate", 1, F.TYPE_DOUBLE)
    _field(sampling, "attributes", 2, F.TYPE_INT32)
    logging = fd.message_type.add(name="LoggingConfig")
    _field(logging, "log_collector_config", 1, F.TYPE_MESSAGE, f".{PKG}.LogCollectorConfig")
    _field(logging, "sampling_config", 2, F.TYPE_MESSAGE, f".{PKG}.SamplingConfig")
    return fd


def _model_server_file() -> Any:
    fd = _file(
        "tensorflow_serving/config/model_server_config.proto",
        [
            "google/protobuf/any.proto",
            "tensorflow_serving/config/logging_config.proto",
            "tensorflow_serving/sources/storage_path/file_system_storage_path_source.proto",
        ],
    )
    mt = fd.enum_type.add(name="ModelType")
    for i, n in enumerate(("MODEL_TYPE_UNSPECIFIED", "TENSORFLOW", "OTHER")):
        mt.value.add(name=n, number=i)
    mc = fd.message_type.add(name="ModelConfig")
    policy = f".{PKG}.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
    _field(mc, "name", 1, F.TYPE_STRING)
    _field(mc, "base_path", 2, F.TYPE_STRING)
    _field(mc, "model_type", 3, F.TYPE_ENUM, f".{PKG}.ModelType")
    _field(mc, "model_platform", 4, F.TYPE_STRING)
    _field(mc, "logging_config", 6, F.TYPE_MESSAGE, f".{PKG}.LoggingConfig")
    _field(mc, "model_version_policy", 7, F.TYPE_MESSAGE, policy)
    entry = mc.nested_type.add(name="VersionLabelsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, F.TYPE_INT64)
    _field(
        mc,
        "version_labels",
        8,
        F.TYPE_MESSAGE,
        f".{PKG}.ModelConfig.VersionLabelsEntry",
        repeated=True,
    )
    # The permissive extras (see the module's docstring).
    _field(mc, "version_policy", VERSION_POLICY_FIELD, F.TYPE_MESSAGE, policy)
    _field(mc, "model_thread_pool_size", THREAD_POOL_FIELD, F.TYPE_INT32)
    mcl = fd.message_type.add(name="ModelConfigList")
    _field(mcl, "config", 1, F.TYPE_MESSAGE, f".{PKG}.ModelConfig", repeated=True)
    msc = fd.message_type.add(name="ModelServerConfig")
    msc.oneof_decl.add(name="config")
    _field(msc, "model_config_list", 1, F.TYPE_MESSAGE, f".{PKG}.ModelConfigList", oneof=0)
    _field(msc, "custom_model_config", 2, F.TYPE_MESSAGE, ".google.protobuf.Any", oneof=0)
    return fd


def _batching_file() -> Any:
    fd = _file(
        "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        ["google/protobuf/wrappers.proto"],
    )
    bp = fd.message_type.add(name="BatchingParameters")
    i64 = ".google.protobuf.Int64Value"
    _field(bp, "max_batch_size", 1, F.TYPE_MESSAGE, i64)
    _field(bp, "batch_timeout_micros", 2, F.TYPE_MESSAGE, i64)
    _field(bp, "max_enqueued_batches", 3, F.TYPE_MESSAGE, i64)
    _field(bp, "num_batch_threads", 4, F.TYPE_MESSAGE, i64)
    _field(bp, "thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue")
    _field(bp, "allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True)
    _field(bp, "pad_variable_length_inputs", 7, F.TYPE_BOOL)
    _field(bp, "enable_large_batch_splitting", 8, F.TYPE_MESSAGE, ".google.protobuf.BoolValue")
    _field(bp, "max_execution_batch_size", 9, F.TYPE_MESSAGE, i64)
    return fd


@cache
def _pool() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for dep in (any_pb2, wrappers_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    for fd in (
        _storage_path_file(),
        _logging_file(),
        _model_server_file(),
        _batching_file(),
    ):
        pool.AddSerializedFile(fd.SerializeToString())
    return pool


def message_class(name: str) -> Any:
    """The class of `tensorflow.serving.<name>`."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"{PKG}.{name}"))
