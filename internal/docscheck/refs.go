package docscheck

import (
	"regexp"
	"strings"
)

// A Ref is one path a file names.
type Ref struct {
	Line int
	Path string
	// Link: a Markdown link target, relative to the file that holds it.
	// Otherwise a path in prose or code, relative to the repository root
	// (or, failing that, to the file's directory, as testdata paths are).
	Link bool
}

var (
	// mdLink is a Markdown link or image: [text](target) with an optional
	// #fragment or "title". The text may not follow an identifier: in Go,
	// F[T](x) is an instantiated generic call, not a link.
	mdLink = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])!?\[[^\]]*\]\(([^()\s#]+)(?:#[^()\s]*)?(?:\s+"[^"]*")?\)`)
	// pathRef is a relative path in prose: at least one directory, and a
	// file name with an extension this repository's references use. It is
	// kept narrow on purpose: a false alarm costs more than a miss.
	// The file name may be a glob (reference/000_*.txt): then something
	// must match it.
	pathRef = regexp.MustCompile(`(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)+[A-Za-z0-9_*][A-Za-z0-9_.*-]*\.(?:md|go|c|h|sh|yaml|yml|xml|json|jsonl|svg|example|txt)\b`)
	// mdName is a document named without a directory (DESIGN.md,
	// README.md): in the file's directory or at the root. Lower-case names
	// (report.md) are what the benchmarks write, not documents.
	mdName = regexp.MustCompile(`[A-Z][A-Za-z0-9_.-]*\.md\b`)
)

// TreeRefs lists the paths text names under one of the repository's
// top-level directories (tops: sipd, relay, bench, ...), files or
// directories, with or without an extension: relay/relaytest,
// internal/netns/. It finds what Refs cannot, a renamed package, at the
// cost of knowing the top-level names.
func TreeRefs(text string, tops []string) []Ref {
	if len(tops) == 0 {
		return nil
	}
	re := regexp.MustCompile(`(?:^|[\s(\x60"'\[])((?:` + strings.Join(quoteAll(tops), "|") + `)(?:/[A-Za-z0-9_*][A-Za-z0-9_.*-]*)+)`)
	var out []Ref
	for i, line := range strings.Split(text, "\n") {
		for _, m := range re.FindAllStringSubmatchIndex(line, -1) {
			a, b := m[2], m[3]
			if b < len(line) && (line[b] == '{' || line[b] == '(') {
				continue // a brace pattern or a call, not a path
			}
			out = append(out, Ref{Line: i + 1, Path: dropSelector(strings.TrimRight(line[a:b], ".,;:"))})
		}
	}
	return out
}

// dropSelector turns a Go selector (sipd/wire.FlowJSON) into its package
// path (sipd/wire); a file name (docs/reference.md) stays as it is.
func dropSelector(p string) string {
	dir, last := "", p
	if i := strings.LastIndex(p, "/"); i >= 0 {
		dir, last = p[:i+1], p[i+1:]
	}
	name, sel, ok := strings.Cut(last, ".")
	if !ok || fileExt.MatchString("."+sel) {
		return p
	}
	return dir + name
}

var fileExt = regexp.MustCompile(`^\.(?:md|go|c|h|o|sh|yaml|yml|xml|json|jsonl|svg|example|txt|cfg)$`)

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = regexp.QuoteMeta(s)
	}
	return out
}

// Refs lists the repo-relative paths text names, line by line.
func Refs(text string) []Ref {
	var out []Ref
	for i, line := range strings.Split(text, "\n") {
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			if t := m[1]; !external(t) {
				out = append(out, Ref{Line: i + 1, Path: t, Link: true})
			}
		}
		for _, re := range []*regexp.Regexp{pathRef, mdName} {
			for _, loc := range re.FindAllStringIndex(line, -1) {
				if p := line[loc[0]:loc[1]]; !partOfLarger(line, loc[0], loc[1]) && !external(p) {
					out = append(out, Ref{Line: i + 1, Path: p})
				}
			}
		}
	}
	return out
}

// external reports whether a target points outside the repository: a URL,
// an absolute path, or a module path.
func external(p string) bool {
	if strings.Contains(p, "://") || strings.HasPrefix(p, "mailto:") || strings.HasPrefix(p, "/") {
		return true
	}
	first, _, nested := strings.Cut(p, "/")
	if !nested {
		return false
	}
	switch {
	case strings.Contains(first, ".") && first != "." && first != "..":
		// Module and host paths (github.com/..., go.yaml.in/...) start
		// with a dotted name; the repository's top-level names have none.
		return true
	case generated[first]:
		return true
	case first == strings.ToUpper(first) && strings.ToUpper(first) != strings.ToLower(first):
		// A placeholder such as DIR/results.jsonl.
		return true
	}
	return false
}

// generated are the directories that builds and benchmarks write and
// the repository does not hold (out/bench/results.jsonl in an example).
var generated = map[string]bool{"out": true, "dist": true, "bin": true}

// partOfLarger reports whether the match at [i, j) is the tail or the
// head of a longer token: an absolute path (/sys/...), a URL, a home or
// variable path (~/..., $DIR/...), a glob, a C header (<sys/socket.h>)
// or a Go selector (pkg.Name).
func partOfLarger(line string, i, j int) bool {
	if strings.HasSuffix(line[:i], "](") {
		return true // a link target, which mdLink reads
	}
	if i > 0 {
		switch line[i-1] {
		case '/', '.', '~', '$', '*', '}', '-', ':', '@', '%', '{', '<':
			return true
		}
		if c := line[i-1]; c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' {
			return true
		}
	}
	if j < len(line) {
		switch line[j] {
		case '/', '*', '{':
			return true
		}
	}
	return false
}
