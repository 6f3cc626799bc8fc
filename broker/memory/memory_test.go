package memory_test

import (
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/memory"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Setup{
		NewNode:     func(*testing.T) broker.Broker { return memory.New(memory.Config{}) },
		SingleNode:  true,
		NewPresence: func(*testing.T) broker.PresenceStore { return memory.NewPresenceStore(nil) },
	})
}
