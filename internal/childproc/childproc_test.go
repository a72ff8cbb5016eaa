package childproc

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type params struct {
	Greeting string `json:"greeting"`
}

type command struct {
	Cmd string `json:"cmd"`
}

func init() {
	// Takes commands until EOF, answering each.
	Register("_echo", func() int {
		var p params
		if err := Params(&p); err != nil {
			Emit("ready", nil, err)
			return 2
		}
		Emit("ready", p, nil)
		var c command
		for Next(&c) {
			Emit("echo", p.Greeting+" "+c.Cmd, nil)
		}
		return 0
	})
	// Runs until SIGTERM, then reports.
	Register("_until_term", func() int {
		ctx, cancel := Context()
		defer cancel()
		Emit("progress", 1, nil)
		Emit("ready", nil, nil)
		<-ctx.Done()
		Emit("result", "stopped", nil)
		return 0
	})
	// Reports its greeting back, or fails on an empty one.
	Register("_serve", Serve(func(ctx context.Context, p params) (any, error) {
		if p.Greeting == "" {
			return nil, errors.New("no greeting")
		}
		return p.Greeting + " back", nil
	}))
	// Answers each command with a Reply: its name back, or an error
	// for "bad".
	Register("_replies", func() int {
		var p params
		if err := Params(&p); err != nil {
			Emit("ready", nil, err)
			return 2
		}
		var c command
		for Next(&c) {
			if c.Cmd == "bad" {
				Reply(nil, errors.New("bad command"))
				continue
			}
			Emit("progress", 1, nil) // skipped by Call
			Reply(c.Cmd, nil)
		}
		return 0
	})
	Register("_fails", func() int {
		Emit("result", nil, errors.New("no such interface"))
		return 1
	})
}

func TestMain(m *testing.M) { Main(m) }

func start(t *testing.T, s Spec) *Proc {
	t.Helper()
	p, err := Start(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	return p
}

func TestServe(t *testing.T) {
	tests := []struct {
		name, greeting, want, wantErr string
	}{
		{"result", "hi", "hi back", ""},
		{"error", "", "", "no greeting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, Spec{Role: "_serve", Params: params{Greeting: tt.greeting}})
			// Await turns the message's error into its own.
			m, err := p.Await(context.Background(), "result", 10*time.Second)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Await = %v, want %q", err, tt.wantErr)
				}
			} else {
				var got string
				if err != nil || m.Decode(&got) != nil || got != tt.want {
					t.Errorf("result %q (%v), want %q", got, err, tt.want)
				}
			}
			if err := p.Wait(); (err == nil) != (tt.wantErr == "") {
				t.Errorf("exit %v with error %q", err, tt.wantErr)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	ctx := context.Background()
	p := start(t, Spec{Role: "_echo", Params: params{Greeting: "hello"}})
	m, err := p.Await(ctx, "ready", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got params
	if err := m.Decode(&got); err != nil || got.Greeting != "hello" {
		t.Fatalf("ready %+v, %v: want the parameters back", got, err)
	}
	for _, c := range []string{"one", "two"} {
		if err := p.Send(command{Cmd: c}); err != nil {
			t.Fatal(err)
		}
		m, err := p.Await(ctx, "echo", 10*time.Second)
		var s string
		if err != nil || m.Decode(&s) != nil || s != "hello "+c {
			t.Fatalf("echo %q, %v; want %q", s, err, "hello "+c)
		}
	}
	p.Close(10 * time.Second)
	if err := p.Wait(); err != nil {
		t.Fatalf("after EOF: %v, want a clean exit", err)
	}
}

func TestCall(t *testing.T) {
	ctx := context.Background()
	p := start(t, Spec{Role: "_replies"})
	for _, tt := range []struct{ cmd, want, wantErr string }{
		{"one", "one", ""},
		{"bad", "", "bad command"},
		{"two", "two", ""},
	} {
		var got string
		err := p.Call(ctx, command{Cmd: tt.cmd}, &got, 10*time.Second)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Call(%s) = %v, want an error with %q", tt.cmd, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Call(%s) = %q, %v; want %q", tt.cmd, got, err, tt.want)
		}
	}
	if err := p.Call(ctx, command{Cmd: "three"}, nil, 10*time.Second); err != nil {
		t.Errorf("Call with no result wanted: %v", err)
	}
	if err := p.Close(10 * time.Second); err != nil {
		t.Errorf("Close: %v, want a clean exit at EOF", err)
	}
}

// A child that ignores the end of its input is killed, and Close says so;
// Crash leaves it no chance to report.
func TestCloseAndCrash(t *testing.T) {
	ctx := context.Background()
	p := start(t, Spec{Role: "_until_term"})
	if _, err := p.Await(ctx, "ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(200 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Close of a child that ignores EOF: %v, want it killed", err)
	}

	p = start(t, Spec{Role: "_until_term"})
	if _, err := p.Await(ctx, "ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Crash(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Await(ctx, "result", 10*time.Second); err == nil || !strings.Contains(err.Error(), "exited before") {
		t.Errorf("crashed child: %v, want no result", err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("exit status %v, want killed", err)
	}
}

func TestStopCollectsResult(t *testing.T) {
	ctx := context.Background()
	p := start(t, Spec{Role: "_until_term", Name: "worker"})
	if _, err := p.Await(ctx, "ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := p.Stop(ctx, 10*time.Second)
	var s string
	if err != nil || m.Decode(&s) != nil || s != "stopped" {
		t.Fatalf("stop: %q, %v", s, err)
	}
}

func TestFailures(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		role, event string
		timeout     time.Duration
		want        string
	}{
		{"_fails", "result", 10 * time.Second, "no such interface"},
		{"_no_such_role", "result", 10 * time.Second, "exited before"},
		{"_until_term", "never", 300 * time.Millisecond, `no "never" within`},
	} {
		p := start(t, Spec{Role: c.role})
		if _, err := p.Await(ctx, c.event, c.timeout); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.role, err, c.want)
		}
	}
}

// A parent reads children's lines: whatever a line holds, decoding it is
// an error or a value, never a panic.
func FuzzMsgDecode(f *testing.F) {
	f.Add([]byte(`{"event":"result","result":{"ok":3}}`))
	f.Add([]byte(`{"event":"ready"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var m Msg
		if json.Unmarshal(line, &m) != nil {
			return
		}
		var v map[string]any
		if err := m.Decode(&v); err == nil && len(m.Result) == 0 {
			t.Fatal("decoded an empty result")
		}
	})
}
