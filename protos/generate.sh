#!/usr/bin/env bash
# Generates Python code and .pyi stubs from protos/parley/v1 into one package.
# usage: gen_protos.sh PYTHON OUT_DIR
set -euo pipefail
py=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I protos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  protos/parley/v1/*.proto
# protoc writes `from parley.v1 import x_pb2`; make it a package-absolute import.
sed -i -E 's/^from parley\.v1 import/from services.common.pb.parley.v1 import/' \
  "$out"/parley/v1/*.py "$out"/parley/v1/*.pyi
echo '"""Generated protobuf and gRPC code for parley.v1 (make proto)."""' > "$out/__init__.py"
echo '"""Generated code for the parley package."""' > "$out/parley/__init__.py"
echo '"""Generated code for parley.v1."""' > "$out/parley/v1/__init__.py"
# Server reflection v1 (grpcio-reflection ships only v1alpha): messages only, the bootstrap
# registers the handler itself.
"$py" -m grpc_tools.protoc -I protos --python_out="$out" --pyi_out="$out" protos/grpc/reflection/v1/reflection.proto
echo '"""Generated code for the grpc package (server reflection v1)."""' > "$out/grpc/__init__.py"
echo '"""Generated code for grpc.reflection."""' > "$out/grpc/reflection/__init__.py"
echo '"""Generated code for grpc.reflection.v1."""' > "$out/grpc/reflection/v1/__init__.py"
