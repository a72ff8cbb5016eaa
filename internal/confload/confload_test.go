package confload

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// level reads itself from a word, as sipconf.Duration reads itself from
// Go duration text: a leaf whose kind is not what the YAML holds.
type level int

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	v, ok := map[string]level{"low": 0, "mid": 1, "high": 2}[n.Value]
	if !ok {
		return fmt.Errorf("%q: want low, mid or high", n.Value)
	}
	*l = v
	return nil
}

type inner struct {
	Name  string   `yaml:"name"`
	Port  int      `yaml:"port"`
	Hosts []string `yaml:"hosts"`
}

type testConf struct {
	StateDir string            `yaml:"state_dir"`
	On       bool              `yaml:"on"`
	Level    level             `yaml:"level"`
	Inner    inner             `yaml:"inner"`
	List     []inner           `yaml:"list"`
	Labels   map[string]string `yaml:"labels"`
	Skipped  string            `yaml:"-"`
	Untagged string
}

const base = `
state_dir: /var/lib/x
on: true
level: low
inner:
  name: a
  port: 1
  hosts: [h1, h2]
list:
  - {name: l0, port: 10}
labels:
  team: voice
  site: ams
`

func load(t *testing.T, file string, env []string, validate func(*testConf) error) (*testConf, error) {
	t.Helper()
	var c testConf
	l := New(&c)
	l.YAML("base", []byte(base), false)
	l.YAML("f.yaml", []byte(file), true)
	l.Env("X_", env)
	var verr error
	if validate != nil {
		verr = validate(&c)
	}
	return &c, l.Result(verr)
}

func TestMergeAndLocate(t *testing.T) {
	cases := []struct {
		name     string
		file     string
		env      []string
		validate func(*testConf) error
		want     func(*testConf)
		errs     string
	}{
		{name: "nothing differs"},
		{name: "mapping merges key by key", file: "inner: {port: 2}\n",
			want: func(c *testConf) { c.Inner.Port = 2 }},
		{name: "map merges key by key", file: "labels: {site: fra, rack: r1}\n",
			want: func(c *testConf) { c.Labels = map[string]string{"team": "voice", "site": "fra", "rack": "r1"} }},
		{name: "list replaces", file: "inner:\n  hosts: [h3]\n",
			want: func(c *testConf) { c.Inner.Hosts = []string{"h3"} }},
		{name: "empty list empties", file: "inner:\n  hosts: []\nlist: []\n",
			want: func(c *testConf) { c.Inner.Hosts, c.List = nil, nil }},
		{name: "null empties a value, keeps a section", file: "state_dir:\ninner:\n",
			want: func(c *testConf) { c.StateDir = "" }},
		{name: "untagged field by lower-case name", file: "untagged: u\n",
			want: func(c *testConf) { c.Untagged = "u" }},
		{name: "skipped field unknown", file: "skipped: x\nSkipped: y\n",
			errs: "f.yaml:1:1: skipped: unknown key\nf.yaml:2:1: Skipped: unknown key"},
		{name: "not a mapping", file: "- a\n", errs: "f.yaml:1:1: top level: want a mapping (key: value lines), have a list"},
		{name: "top-level key that is not a word", file: "? [a]\n: 1\n", errs: "f.yaml:1:3: top level: a key must be a plain word, have a list"},
		{name: "key that is not a word", file: "inner:\n  [a]: 1\n",
			errs: "f.yaml:2:3: inner: a key must be a plain word, have a list"},
		{name: "env", env: []string{"X_STATE_DIR=/srv", "X_INNER_HOSTS=[a, b]", "X_ON=false", "Y_OTHER=1"},
			want: func(c *testConf) { c.StateDir, c.Inner.Hosts, c.On = "/srv", []string{"a", "b"}, false }},
		{name: "env map merges as a file's does", env: []string{"X_LABELS={a: b}"},
			want: func(c *testConf) { c.Labels = map[string]string{"a": "b", "team": "voice", "site": "ams"} }},
		{name: "env unknown", env: []string{"X_INNER=1", "X_INNER_PORTS=2"},
			errs: "$X_INNER: no such setting: want X_ and a key path with . written _, such as X_STATE_DIR\n" +
				"$X_INNER_PORTS: no such setting; did you mean X_INNER_PORT?"},
		{name: "typo", file: "inner:\n  nmae: x\n  hots: [a]\n  zzz: 1\n",
			errs: "f.yaml:2:3: inner.nmae: unknown key; did you mean name?\n" +
				"f.yaml:3:3: inner.hots: unknown key; did you mean hosts?\n" +
				"f.yaml:4:3: inner.zzz: unknown key"},
		{name: "unmarshaler", file: "level: high\n", env: []string{"X_INNER_NAME=mid"},
			want: func(c *testConf) { c.Level, c.Inner.Name = level(2), "mid" }},
		{name: "unmarshaler error", file: "level: loud\n",
			errs: `f.yaml:1:8: level: "loud": want low, mid or high`},
		{name: "env type error", env: []string{"X_INNER_PORT=[1]"},
			errs: "$X_INNER_PORT: inner.port: want an integer, have a list"},
		{name: "validation error located in the file", file: "list:\n  - name: x\n    port: 99999\n",
			validate: func(c *testConf) error {
				var errs []error
				for i, e := range c.List {
					if e.Port > 65535 {
						errs = append(errs, Errorf(fmt.Sprintf("list[%d].port", i), "%s %d: too big", e.Port))
					}
				}
				errs = append(errs, Errorf("inner.port", "%s: from the default"), errors.New("unkeyed"))
				return errors.Join(errs...)
			},
			errs: "f.yaml:3:11: list[0].port 99999: too big\ninner.port: from the default\nunkeyed"},
		{name: "validation error under a replaced value points at the replacement", file: "list: [{name: x, port: 1}]\n",
			env: []string{"X_LIST=[{name: y}]"},
			validate: func(c *testConf) error {
				return Errorf("list[0].port", "%s %d: zero", c.List[0].Port)
			},
			errs: "$X_LIST: list[0].port 0: zero"},
		{name: "validation error after a decode error is left out", file: "inner:\n  port: many\n",
			validate: func(c *testConf) error {
				return errors.Join(Errorf("inner.port", "%s: consequence"), Errorf("inner", "%s: consequence"), Errorf("state_dir", "%s: kept"))
			},
			errs: "f.yaml:2:9: inner.port: want an integer, have \"many\"\nstate_dir: kept"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := load(t, c.file, c.env, c.validate)
			if c.errs != "" {
				if err == nil || err.Error() != c.errs {
					t.Fatalf("err\n%v\nwant\n%s", err, c.errs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, err := load(t, "", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.want != nil {
				c.want(want)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

type ambiguous struct {
	A struct {
		B string `yaml:"b"`
	} `yaml:"a"`
	AB string `yaml:"a_b"`
}

// TestEnvAmbiguous: a name that fits two keys is refused, naming both.
func TestEnvAmbiguous(t *testing.T) {
	var c ambiguous
	l := New(&c)
	l.Env("X_", []string{"X_A_B=1"})
	err := l.Result(nil)
	if err == nil || !strings.Contains(err.Error(), "$X_A_B: ambiguous: it names a.b and a_b") {
		t.Fatalf("err = %v", err)
	}
	if c.A.B != "" || c.AB != "" {
		t.Errorf("set anyway: %+v", c)
	}
}

func TestLeaves(t *testing.T) {
	got := strings.Join(Leaves(reflect.TypeFor[testConf]()), " ")
	want := "state_dir on level inner.name inner.port inner.hosts list labels untagged"
	if got != want {
		t.Errorf("leaves %q, want %q", got, want)
	}
}

// FuzzYAML: any text, as a file or as an environment value, is merged or
// refused without a panic, and every error is on its own line.
func FuzzYAML(f *testing.F) {
	for _, s := range []string{base, "", "inner: {port: x}", "list: &a [*a]", "labels: {a: &b [*b]}", "a: 1\n---\nb: 2", "inner:\n  - 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 16<<10 {
			return
		}
		var c testConf
		l := New(&c)
		l.YAML("base", []byte(base), false)
		l.YAML("f.yaml", []byte(s), true)
		l.Env("X_", []string{"X_LIST=" + s, "X_LABELS=" + s, "X_INNER_PORT=" + s})
		_ = l.Result(Errorf("inner.port", "%s: checked"))
	})
}
