package sipserver

import (
	"testing"

	"go.uber.org/goleak"
)

// Every server a test starts must be gone, with all its goroutines, when
// the package's tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
