package relay

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test in the package, not only the Run/Close ones, must leave no
// goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
