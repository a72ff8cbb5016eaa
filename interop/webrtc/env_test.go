package webrtc

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"sipxdp/internal/browser"
	"sipxdp/internal/netns"
	"sipxdp/internal/testenv"
)

// jssipBundle is JsSIP as npm ci's postinstall bundles it (package.json).
const jssipBundle = "build/jssip.js"

// requireBrowser skips (fails under CI) unless this machine can run the
// browser tests, and returns Chromium's path.
func requireBrowser(t *testing.T) string {
	t.Helper()
	bin := browser.Require(t)
	if _, err := os.Stat(jssipBundle); err != nil {
		testenv.Unavailable(t, "JsSIP is not installed: run scripts/install-deps.sh (npm ci in interop/webrtc): "+err.Error())
	}
	return bin
}

// openPage opens the test page in Chromium inside ns with query as its
// parameters.
func openPage(t *testing.T, bin string, ns *netns.NS, query url.Values) *browser.Page {
	t.Helper()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	return browser.Open(t, browser.Config{NS: ns, Binary: bin, PageDir: abs("page"),
		Files: map[string]string{"/jssip.js": abs(jssipBundle)}, Query: query})
}
