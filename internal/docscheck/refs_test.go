package docscheck

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestReferencesResolve walks the repository's Go and Markdown files and
// fails for every path they name that is not in the repository.
func TestReferencesResolve(t *testing.T) {
	root := repoRoot(t)
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	tops := topDirs(t, root)
	goroot := goRoot(t)
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == here {
				return filepath.SkipDir // this package's examples are made up
			}
			if notOurs[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".go" && ext != ".md" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, r := range append(Refs(string(b)), TreeRefs(string(b), tops)...) {
			checked++
			if !resolves(root, filepath.Dir(path), r) && !inGoroot(goroot, r.Path) {
				t.Errorf("%s:%d: %s does not exist in the repository", rel, r.Line, r.Path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The walk must have found something to check, or it checks nothing.
	if checked < 50 {
		t.Fatalf("only %d references found under %s: is the walk broken?", checked, root)
	}
}

func resolves(root, dir string, r Ref) bool {
	p := filepath.FromSlash(r.Path)
	if r.Link {
		return exists(filepath.Join(dir, p))
	}
	return exists(filepath.Join(root, p)) || exists(filepath.Join(dir, p))
}

// exists reports whether p names a file or directory; a glob must match
// at least one.
func exists(p string) bool {
	if strings.Contains(p, "*") {
		m, err := filepath.Glob(p)
		return err == nil && len(m) > 0
	}
	_, err := os.Stat(p)
	return err == nil
}

// goRoot is the Go installation's root: profiles in the benchmark
// reports name the standard library's internal packages
// (internal/runtime/maps), which share the repository's internal/.
func goRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// inGoroot reports whether p is a package of the standard library.
func inGoroot(goroot, p string) bool {
	return goroot != "" && exists(filepath.Join(goroot, "src", filepath.FromSlash(p)))
}

// notOurs are directories of build output and fetched code: what they
// hold is not written here, and a reference into them (dist/, where make
// deb writes) is to something a build makes, not a file of the repository.
var notOurs = map[string]bool{".git": true, "testdata": true, "vendor": true, "node_modules": true, "dist": true, "bin": true, "out": true}

// topDirs are the repository's top-level directories that hold code or
// documents.
func topDirs(t *testing.T, root string) []string {
	t.Helper()
	es, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && !notOurs[e.Name()] {
			out = append(out, e.Name())
		}
	}
	return out
}

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if exists(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func TestRefs(t *testing.T) {
	cases := []struct {
		name, text string
		want       []Ref
	}{
		{"prose", "see docs/ARCHITECTURE.md and usrelay/README.md.",
			[]Ref{{1, "docs/ARCHITECTURE.md", false}, {1, "usrelay/README.md", false}}},
		{"go comment", "// (docs/reference.md [R2]) and bench/itsp/itsp.go",
			[]Ref{{1, "docs/reference.md", false}, {1, "bench/itsp/itsp.go", false}}},
		{"markdown link", "[the design](../docs/ARCHITECTURE.md#fast-path) and [x](README.md)",
			[]Ref{{1, "../docs/ARCHITECTURE.md", true}, {1, "README.md", true}}},
		{"line numbers", "a\nb sipd/SIP.md\n", []Ref{{2, "sipd/SIP.md", false}}},
		{"urls are not ours", "https://github.com/sipwise/rtpengine/blob/master/docs/ng_control_protocol.md", nil},
		{"link to a url", "[rtpengine](https://example.com/docs/x.md)", nil},
		{"go generic call", "out.JSONColumns[Result](nil), f[T](p) and ![img](a.svg)",
			[]Ref{{1, "a.svg", true}}},
		{"absolute paths", "/sys/fs/bpf/sipxdp and /tmp/bench-r1/results.jsonl", nil},
		{"module paths", "go.yaml.in/yaml/v3 and github.com/pion/sdp/v3/sdp.go", nil},
		{"variables", `$dir/*_test.go, ~/.config/x.yaml, $HOME/README.md`, nil},
		{"lower-case documents are outputs", "writes report.md", nil},
		{"markdown without a directory", "README.md and main.go (DESIGN.md)",
			[]Ref{{1, "README.md", false}, {1, "DESIGN.md", false}}},
		{"glob", "shared/reference/000_*.txt", []Ref{{1, "shared/reference/000_*.txt", false}}},
		{"unknown extension", "modules/rtpengine.so", nil},
		{"outputs and placeholders", "bench report out/bench/results.jsonl, in `DIR/results.jsonl`", nil},
		{"c header", "struct mmsghdr of <sys/socket.h>", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Refs(c.text); !reflect.DeepEqual(got, c.want) {
				t.Errorf("Refs(%q) = %v, want %v", c.text, got, c.want)
			}
		})
	}
}

// TestDanglingFails: a reference to a missing file is caught.
func TestDanglingFails(t *testing.T) {
	root := repoRoot(t)
	for _, r := range Refs("see docs/NO-SUCH-FILE.md, DESIGN.md, shared/reference/000_*.txt and [x](nope/missing.md)") {
		if resolves(root, root, r) {
			t.Errorf("%s resolves, but no such file exists", r.Path)
		}
	}
	if !resolves(root, root, Ref{Path: "docs/ARCHITECTURE.md"}) || !strings.HasSuffix(root, filepath.Base(root)) {
		t.Error("docs/ARCHITECTURE.md does not resolve")
	}
}

func TestTreeRefs(t *testing.T) {
	tops := []string{"sipd", "relay", "internal"}
	cases := []struct {
		name, text string
		want       []string
	}{
		{"directories", "see relay/relaytest and internal/netns/, sipd/SIP.md.", []string{"relay/relaytest", "internal/netns", "sipd/SIP.md"}},
		{"selector", "`sipd/wire.FlowJSON` and sipd/media.Controller", []string{"sipd/wire", "sipd/media"}},
		{"file kept", "(relay/info.go)", []string{"relay/info.go"}},
		{"config file kept", "internal/x/testdata/kamailio.cfg", []string{"internal/x/testdata/kamailio.cfg"}},
		{"not a top", "TCP/TLS and usrelay/x and xsipd/y", nil},
		{"brace pattern", "relay/x_{a,b}", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, r := range TreeRefs(c.text, tops) {
				got = append(got, r.Path)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("TreeRefs(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func FuzzRefs(f *testing.F) {
	f.Add("see docs/ARCHITECTURE.md and [x](../a/b.md#c)")
	f.Add("](")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range append(Refs(s), TreeRefs(s, []string{"sipd", "relay"})...) {
			if r.Path == "" || r.Line < 1 {
				t.Fatalf("bad ref %+v from %q", r, s)
			}
		}
	})
}
