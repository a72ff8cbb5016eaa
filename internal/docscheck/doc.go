// Package docscheck holds the test that keeps the repository's references
// to its own files honest: every repo-relative path that a Go comment or
// string, or a Markdown file, names (docs/ARCHITECTURE.md, usrelay/README.md,
// a Markdown link to a relative path) must exist, so a reference left
// dangling by a move or a rename fails CI.
package docscheck
