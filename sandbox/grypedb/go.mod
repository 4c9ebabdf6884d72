module rollbook.dev/sandbox/grypedb

go 1.26.8

// The version must equal SCANNER_PINS["grype"] in sandbox/toolchain.py: the DB written here has to be the schema
// the grype binary reads. The toolchain builds a copy of this directory with that pin and `go mod tidy`.
require github.com/anchore/grype v0.121.2
