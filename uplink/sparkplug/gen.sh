#!/bin/sh
# Regenerates sproto/sparkplug_b.pb.go from sproto/sparkplug_b.proto.
# Needs protoc (apt-get install -y protobuf-compiler) and
# go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 (on PATH).
set -eu
cd "$(dirname "$0")/sproto"
protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
