// Command grypedb writes a tiny grype (schema v6) vulnerability database holding only the sandbox's made-up
// advisories, with grype's own v6 DB writer, so the sandbox can run a real grype scan with no network.
//
// Usage: grypedb -advisories advisories.json -out DIR   (writes DIR/vulnerability.db; `grype db import` takes it)
//
// The advisories file is written by sandbox/grypedb.py, which also builds the demo images they match:
//
//	{"provider": "rollbook-sandbox", "advisories": [{"id": "SANDBOX-2026-0001", "severity": "critical",
//	  "description": "...", "ecosystem": "python", "package": "rollbook-scan-demo",
//	  "version_type": "python", "affected": "< 1.1.0", "fixed": "1.1.0"}]}
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	v6 "github.com/anchore/grype/grype/db/v6"
)

type advisory struct {
	ID          string `json:"id"`
	Severity    string `json:"severity"` // critical, high, medium, low or negligible
	Description string `json:"description"`
	Ecosystem   string `json:"ecosystem"` // a syft package type, e.g. python
	Package     string `json:"package"`
	VersionType string `json:"version_type"` // how grype compares versions, e.g. python, semver
	Affected    string `json:"affected"`     // a version constraint, e.g. "< 1.1.0"
	Fixed       string `json:"fixed"`        // the first fixed version, or empty
}

type input struct {
	Provider   string     `json:"provider"`
	Advisories []advisory `json:"advisories"`
}

func main() {
	advisories := flag.String("advisories", "", "JSON file with the advisories to write")
	out := flag.String("out", "", "directory to write vulnerability.db into (created; must not hold a DB yet)")
	flag.Parse()
	if *advisories == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "grypedb: -advisories and -out are required")
		os.Exit(2)
	}
	if err := run(*advisories, *out); err != nil {
		fmt.Fprintf(os.Stderr, "grypedb: %v\n", err)
		os.Exit(1)
	}
}

func run(advisoriesPath, out string) error {
	raw, err := os.ReadFile(advisoriesPath)
	if err != nil {
		return err
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("reading %s: %w", advisoriesPath, err)
	}
	if in.Provider == "" || len(in.Advisories) == 0 {
		return fmt.Errorf("%s: a provider and at least one advisory are required", advisoriesPath)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// NewWriter starts an empty DB and stamps its metadata (schema version, build time = now); Close drops the
	// indexes and vacuums, as grype's published DBs are shipped; `grype db import` recreates the indexes.
	store, err := v6.NewWriter(v6.Config{DBDirPath: out})
	if err != nil {
		return fmt.Errorf("opening a v6 DB writer in %s: %w", out, err)
	}
	now := time.Now().UTC()
	provider := &v6.Provider{ID: in.Provider, Version: "1", Processor: "rollbook-sandbox-grypedb", DateCaptured: &now}
	for _, a := range in.Advisories {
		if err := add(store, provider, a, now); err != nil {
			_ = store.Close()
			return fmt.Errorf("advisory %s: %w", a.ID, err)
		}
	}
	return store.Close()
}

func add(store v6.ReadWriter, provider *v6.Provider, a advisory, published time.Time) error {
	vuln := &v6.VulnerabilityHandle{
		Name:          a.ID,
		Status:        v6.VulnerabilityActive,
		PublishedDate: &published,
		Provider:      provider,
		BlobValue: &v6.VulnerabilityBlob{
			ID:          a.ID,
			Description: a.Description,
			Severities:  []v6.Severity{{Scheme: v6.SeveritySchemeCHMLN, Value: a.Severity, Source: provider.ID, Rank: 1}},
		},
	}
	if err := store.AddVulnerabilities(vuln); err != nil {
		return err
	}
	rng := v6.Range{Version: v6.Version{Type: a.VersionType, Constraint: a.Affected}}
	if a.Fixed != "" {
		rng.Fix = &v6.Fix{Version: a.Fixed, State: v6.FixedStatus}
	}
	return store.AddAffectedPackages(&v6.AffectedPackageHandle{
		Vulnerability: vuln,
		Package:       &v6.Package{Ecosystem: a.Ecosystem, Name: a.Package},
		BlobValue:     &v6.PackageBlob{Ranges: []v6.Range{rng}},
	})
}
