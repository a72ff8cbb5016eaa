// Package confload decodes configuration layers onto one Go struct: a
// YAML document (the embedded default, then the operator's file, each
// merged onto what came before), then single keys (environment variables,
// command-line flags). Every problem is collected, not just the first, and
// each names its key path and where the value came from (file:line:col, an
// environment variable, a flag), validation errors included (see Errorf).
//
// It walks yaml.v3 nodes itself rather than using yaml's struct decoding
// or a layering library (koanf, viper): those flatten the layers into maps
// and keep no line numbers, and yaml.v3 reports unknown keys and type
// errors by Go type name, not by key path.
package confload

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// KeyError is a problem with the value at Key, a key path such as
// "media.addresses[0].local". Validation code returns it (see Errorf) so
// that Loader.Result can say where the value came from.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Errorf returns a *KeyError for key. The key is the first argument of
// format, so the message names it once: Errorf("media.mode", "%s %q: want
// none, all or nat", mode).
func Errorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, append([]any{key}, args...)...)}
}

// Loader decodes layers onto the struct it was made for. Later layers
// win: a mapping merges key by key onto what is there, anything else (a
// scalar, a list) replaces it, and an explicit null or [] sets the key
// empty (an empty section leaves its defaults).
type Loader struct {
	dst     reflect.Value
	origins map[string]string // key path: where its value was last set
	failed  []string          // key paths whose value could not be decoded
	errs    []error
}

// New returns a Loader that decodes onto dst, a pointer to a struct.
func New(dst any) *Loader {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("confload: New needs a pointer to a struct")
	}
	return &Loader{dst: v.Elem(), origins: map[string]string{}}
}

// YAML merges the YAML document data onto the struct. name is how errors
// and origins call it (a file's path); when track is false the layer's
// values are not recorded as origins (the built-in default, which an
// operator did not write).
func (l *Loader) YAML(name string, data []byte, track bool) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // empty file: nothing differs
			return
		}
		l.errs = append(l.errs, syntaxError(name, err))
		return
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		line := more.Line
		if len(more.Content) > 0 {
			line = more.Content[0].Line
		}
		l.errs = append(l.errs, fmt.Errorf("%s:%d: a second YAML document: one is read, so put everything in one", name, line))
		return
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = *doc.Content[0]
	}
	if doc.Kind == 0 || doc.Kind == yaml.DocumentNode { // only comments
		return
	}
	s := source{name: name, lines: true, track: track}
	l.decode(l.dst, &doc, "", s, s.at(&doc))
}

// Set decodes value (YAML flow text, so lists work: "[10.0.0.0/8]") onto
// the leaf at key, recording origin (such as "$SIPD_HTTP_ALLOW") as where
// it came from.
func (l *Loader) Set(key, value, origin string) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(value), &doc); err != nil {
		l.errs = append(l.errs, fmt.Errorf("%s: %s: %w", origin, key, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))))
		return
	}
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"} // an empty value sets the key empty
	if len(doc.Content) == 1 {
		n = doc.Content[0]
	}
	l.set(key, n, origin)
}

// SetString sets the leaf at key to the string s as it is, with no YAML
// reading (for flags whose value is always a string).
func (l *Loader) SetString(key, s, origin string) {
	l.set(key, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}, origin)
}

func (l *Loader) set(key string, n *yaml.Node, origin string) {
	v, ok := leafValue(l.dst, key)
	if !ok {
		panic("confload: no leaf " + key) // a caller's key, not input
	}
	s := source{name: origin, track: true}
	l.decode(v, n, key, s, origin)
}

// Env applies the environment variables in environ ("NAME=value", as
// os.Environ gives them) whose name starts with prefix. A name is prefix
// and a leaf's key path upper-cased with "." and "_" both written "_"
// (media.pin_path: SIPD_MEDIA_PIN_PATH). A name no leaf fits is an error,
// and so is one that fits two (EnvNames reports such key sets).
func (l *Loader) Env(prefix string, environ []string) {
	names := EnvNames(l.dst.Type(), prefix)
	var vars []string
	for _, kv := range environ {
		if strings.HasPrefix(kv, prefix) {
			vars = append(vars, kv)
		}
	}
	sort.Strings(vars)
	for _, kv := range vars {
		name, value, _ := strings.Cut(kv, "=")
		keys := names[name]
		switch len(keys) {
		case 0:
			hint := didYouMean(name, slices.Collect(maps.Keys(names)))
			if hint == "" {
				hint = fmt.Sprintf(": want %s and a key path with . written _, such as %s", prefix, EnvName(prefix, Leaves(l.dst.Type())[0]))
			}
			l.errs = append(l.errs, fmt.Errorf("$%s: no such setting%s", name, hint))
		case 1:
			l.Set(keys[0], value, "$"+name)
		default:
			l.errs = append(l.errs, fmt.Errorf("$%s: ambiguous: it names %s; set them in the file", name, strings.Join(keys, " and ")))
		}
	}
}

// EnvName is the environment variable of the leaf at key.
func EnvName(prefix, key string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvNames maps each environment variable name to the leaves it names:
// one, unless two key paths differ only in "." against "_".
func EnvNames(t reflect.Type, prefix string) map[string][]string {
	m := map[string][]string{}
	for _, k := range Leaves(t) {
		n := EnvName(prefix, k)
		m[n] = append(m[n], k)
	}
	return m
}

// Leaves lists the key paths of t's leaves: every field that is not a
// struct (lists and maps are leaves: they are set whole), depth first.
func Leaves(t reflect.Type) []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for _, f := range fields(t) {
			k := join(prefix, f.name)
			if ft := t.Field(f.index).Type; ft.Kind() == reflect.Struct && !isUnmarshaler(ft) {
				walk(ft, k)
			} else {
				out = append(out, k)
			}
		}
	}
	walk(t, "")
	return out
}

// Result returns every problem the layers had together with validate's
// (the error a Validate method returned, nil for none), each prefixed
// with where its value came from when a *KeyError says which key it is.
// Validation errors at, under or above a key whose value failed to decode
// are left out: they are about the value that stayed (or the zero value
// of a new list element), not the one written, and would send the
// operator after a problem that is not there.
func (l *Loader) Result(validate error) error {
	errs := append([]error(nil), l.errs...)
	for _, e := range flatten(validate) {
		var ke *KeyError
		if !errors.As(e, &ke) {
			errs = append(errs, e)
			continue
		}
		if l.underFailed(ke.Key) {
			continue
		}
		if at := l.origin(ke.Key); at != "" {
			e = fmt.Errorf("%s: %w", at, e)
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// Origin says where the value at key came from ("" when from an untracked
// layer): its own, or that of the nearest enclosing key that was set.
func (l *Loader) origin(key string) string {
	for k := key; k != ""; k = parent(k) {
		if o, ok := l.origins[k]; ok {
			return o
		}
	}
	return ""
}

func (l *Loader) underFailed(key string) bool {
	for _, f := range l.failed {
		if key == f || isUnder(key, f) || isUnder(f, key) {
			return true
		}
	}
	return false
}

// source is a layer as decode needs it.
type source struct {
	name  string
	lines bool // name:line:col for nodes (a file), or name alone
	track bool
}

func (s source) at(n *yaml.Node) string {
	if !s.lines {
		return s.name
	}
	return fmt.Sprintf("%s:%d:%d", s.name, n.Line, n.Column)
}

// decode merges n onto v, the value at key; at is where n is, for errors.
func (l *Loader) decode(v reflect.Value, n *yaml.Node, key string, s source, at string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	isStruct := v.Kind() == reflect.Struct && !isUnmarshaler(v.Type())
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		if !isStruct { // an explicit empty value; an empty section keeps its defaults
			v.SetZero()
			l.record(key, s, at, true)
		}
		return
	}
	switch {
	case isStruct:
		if n.Kind != yaml.MappingNode {
			l.bad(key, at, "want a mapping (key: value lines), have %s", describe(n))
			return
		}
		l.record(key, s, at, false)
		fs := fields(v.Type())
		byName := make(map[string]int, len(fs))
		for _, f := range fs {
			byName[f.name] = f.index
		}
		l.pairs(n, key, s, func(k string, kn, vn *yaml.Node) {
			i, ok := byName[k]
			if !ok {
				l.errs = append(l.errs, fmt.Errorf("%s: %s: unknown key%s", s.at(kn), join(key, k), didYouMean(k, slices.Collect(maps.Keys(byName)))))
				return
			}
			l.decode(v.Field(i), vn, join(key, k), s, position(s, kn, vn))
		})
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && !isUnmarshaler(v.Type()):
		if n.Kind != yaml.MappingNode {
			l.bad(key, at, "want a mapping (key: value lines), have %s", describe(n))
			return
		}
		l.record(key, s, at, false)
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		l.pairs(n, key, s, func(k string, kn, vn *yaml.Node) {
			e := reflect.New(v.Type().Elem()).Elem()
			if old := v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())); old.IsValid() {
				e.Set(old)
			}
			l.decode(e, vn, join(key, k), s, position(s, kn, vn))
			v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
		})
	case v.Kind() == reflect.Slice && !isUnmarshaler(v.Type()):
		if n.Kind != yaml.SequenceNode {
			l.bad(key, at, "want a list ([a, b] or - lines), have %s", describe(n))
			return
		}
		l.record(key, s, at, true)
		if len(n.Content) == 0 {
			v.SetZero() // nil, so a config written out and read back is equal
			return
		}
		list := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, e := range n.Content {
			l.decode(list.Index(i), e, fmt.Sprintf("%s[%d]", key, i), s, s.at(e))
		}
		v.Set(list)
	default:
		if n.Kind != yaml.ScalarNode && !isUnmarshaler(v.Type()) {
			l.bad(key, at, "want %s, have %s", want(v.Type()), describe(n))
			return
		}
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				l.bad(key, at, "want %s, have %s", want(v.Type()), describe(n))
			} else {
				l.bad(key, at, "%v", err)
			}
			return
		}
		v.Set(p.Elem())
		l.record(key, s, at, true)
	}
}

// pairs calls f for each key of the mapping n, refusing repeated keys and
// keys that are not plain strings.
func (l *Loader) pairs(n *yaml.Node, key string, s source, f func(k string, kn, vn *yaml.Node)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			l.errs = append(l.errs, fmt.Errorf("%s: %s: a key must be a plain word, have %s", s.at(kn), keyName(key), describe(kn)))
			continue
		}
		if first, ok := seen[kn.Value]; ok {
			l.errs = append(l.errs, fmt.Errorf("%s: %s: repeated (first at line %d)", s.at(kn), join(key, kn.Value), first.Line))
			continue
		}
		seen[kn.Value] = kn
		f(kn.Value, kn, vn)
	}
}

func (l *Loader) bad(key, at, format string, args ...any) {
	l.failed = append(l.failed, key)
	l.errs = append(l.errs, fmt.Errorf("%s: %s: %s", at, keyName(key), fmt.Sprintf(format, args...)))
}

// keyName is key for messages, the empty path included.
func keyName(key string) string {
	if key == "" {
		return "top level"
	}
	return key
}

// record notes where the value at key came from. A value that replaces
// (replace: a leaf, a list) makes the origins of what was under it stale.
func (l *Loader) record(key string, s source, at string, replace bool) {
	if !s.track || key == "" {
		return
	}
	if replace {
		for k := range l.origins {
			if isUnder(k, key) {
				delete(l.origins, k)
			}
		}
	}
	l.origins[key] = at
}

// position is where errors about a mapping value point: the value itself
// when it is a scalar, its key when the value spans lines.
func position(s source, kn, vn *yaml.Node) string {
	if vn.Kind == yaml.ScalarNode {
		return s.at(vn)
	}
	return s.at(kn)
}

type field struct {
	name  string
	index int
}

// fields lists t's exported fields by their yaml names, without those
// tagged "-".
func fields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name) // yaml.v3's default
		}
		out = append(out, field{name, i})
	}
	return out
}

// leafValue finds the field at the dotted key below v.
func leafValue(v reflect.Value, key string) (reflect.Value, bool) {
	for part := range strings.SplitSeq(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		found := false
		for _, f := range fields(v.Type()) {
			if f.name == part {
				v, found = v.Field(f.index), true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
	}
	return v, true
}

var unmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

func isUnmarshaler(t reflect.Type) bool {
	return t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler)
}

// want names what a value of type t is written as.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer 0 or more"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a single value"
}

// describe names what n is, for "want X, have Y".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("%q", v)
	}
	return "an alias"
}

// didYouMean suggests the candidate nearest to a mistyped name, when one
// is within two edits (a typo, a letter left out); "" when none is.
func didYouMean(name string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean " + best + "?"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// syntaxError turns yaml's "yaml: line 3: ..." into "name:3: ...".
func syntaxError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		_, rest, _ := strings.Cut(msg, ": ")
		return fmt.Errorf("%s:%d: %s", name, line, rest)
	}
	return fmt.Errorf("%s: %s", name, msg)
}

// flatten lists the errors inside errors.Join trees, keeping each
// *KeyError whole.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*KeyError); ok {
		return []error{err}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// isUnder reports whether key is strictly inside the value at p.
func isUnder(key, p string) bool {
	return strings.HasPrefix(key, p) && len(key) > len(p) && (key[len(p)] == '.' || key[len(p)] == '[')
}

// parent is the key that holds key: "a.b[2]" for "a.b[2].c", "a.b" for
// "a.b[2]", "" at the top.
func parent(key string) string {
	i := strings.LastIndexAny(key, ".[")
	if i < 0 {
		return ""
	}
	return key[:i]
}
