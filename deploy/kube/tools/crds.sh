#!/usr/bin/env bash
# The CustomResourceDefinitions the manifests use, taken from the projects' own releases on
# registries, into .local/k8s/crds-<project>-<version>/ (part of `make k8s-tools`):
#   KEDA ScaledObject   - config/crd/bases of the Go module github.com/kedacore/keda/v2 (module proxy)
#   Strimzi Kafka, KafkaTopic - generated from io.strimzi:api by io.strimzi:crd-generator (Maven Central,
#                        deploy/kube/tools/strimzi/pom.xml), with the options of Strimzi's own build
#                        (v1 CRDs, v1beta2 served and stored).
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${K8S_TOOLS_DIR:-$PWD/.local/k8s}
source deploy/kube/tools/versions.env
STRIMZI_VERSION=$(sed -n 's:.*<strimzi.version>\(.*\)</strimzi.version>.*:\1:p' deploy/kube/tools/strimzi/pom.xml)

dir="$OUT/crds-keda-$KEDA_VERSION"
if [ ! -f "$dir/.built" ]; then
  echo "==> KEDA $KEDA_VERSION ScaledObject CRD (Go module proxy)"
  src=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$dir"
  cp "$src/config/crd/bases/keda.sh_scaledobjects.yaml" "$dir/"
  chmod u+w "$dir"/*.yaml && touch "$dir/.built"
fi

dir="$OUT/crds-strimzi-$STRIMZI_VERSION"
if [ ! -f "$dir/.built" ]; then
  echo "==> Strimzi $STRIMZI_VERSION Kafka and KafkaTopic CRDs (Maven Central, crd-generator)"
  command -v mvn >/dev/null && command -v java >/dev/null || {
    echo "the Strimzi CRDs are generated with Maven and Java: run \`python -m deploy.local install\` first"; exit 1; }
  mkdir -p "$dir"
  mvn -q -B -f deploy/kube/tools/strimzi/pom.xml dependency:build-classpath -Dmdep.outputFile="$dir/classpath.txt"
  java -cp "$(cat "$dir/classpath.txt")" io.strimzi.crdgenerator.CrdGenerator \
    --yaml --crd-api-version v1 --storage-version v1beta2 --api-versions v1beta2 \
    --label app:strimzi --label strimzi.io/crd-install:true \
    "io.strimzi.api.kafka.model.kafka.Kafka=$dir/kafka.strimzi.io_kafkas.yaml" \
    "io.strimzi.api.kafka.model.topic.KafkaTopic=$dir/kafka.strimzi.io_kafkatopics.yaml" 2>&1 | grep -v '^SLF4J' || true
  test -s "$dir/kafka.strimzi.io_kafkatopics.yaml" && rm "$dir/classpath.txt" && touch "$dir/.built"
fi
