package e2e

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/sim"
)

// simulated devices by address, so waitForPolls can read their counters.
var simByAddr = map[string]*sim.ModbusServer{}

// startDevice starts a simulated Modbus TCP device whose registers change
// every 50 ms and returns its address.
func startDevice(t *testing.T) string {
	t.Helper()
	s := sim.NewModbus(sim.ModbusOptions{})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for n := 0; ; n++ {
			for j := range 10 {
				s.SetHolding(uint16(j), uint16(n+j))
			}
			for j := range 5 {
				_ = s.PutFloat32(modbus.HoldingRegister, uint16(10+2*j), modbus.CDAB, float32(math.Sin(float64(n+j)/10)))
				s.SetCoil(uint16(j), (n+j)%2 == 0)
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = s.Close()
	})
	simByAddr[s.Addr()] = s
	return s.Addr()
}

// waitForPolls waits until every device has served at least n requests.
func waitForPolls(t *testing.T, addrs []string, n uint64) {
	t.Helper()
	peers.CheckFor(t, 30*time.Second, fmt.Sprintf("%d requests served by each device", n), func() error {
		for _, a := range addrs {
			if got := simByAddr[a].Requests(); got < n {
				return fmt.Errorf("device %s served %d requests", a, got)
			}
		}
		return nil
	})
}
