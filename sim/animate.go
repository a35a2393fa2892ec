package sim

import (
	"context"
	"math"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/telemetry"
)

// Tick advances the simulated process by one step and rewrites the
// animated values. With n the number of Ticks so far (after this one):
//
//	holding 0..1    uint32  ABCD  counter: n
//	holding 2..3    float32 ABCD  sine: 100·sin(2π·n/60)
//	holding 4..5    float32 CDAB  the same sine, words swapped
//	holding 6       int16         temperature ×10: 200 + round(50·sin(2π·n/120)) (scale 0.1 → 15.0..25.0 degC)
//	holding 7       uint16        sawtooth: n mod 1000
//	holding 8       uint16        status word: bit 0 running (n/30 even), bit 1 alarm (n mod 100 ≥ 95)
//	holding 10..13  string        recipe: "RCP-" and n/100 mod 1000 as 3 digits (7 chars, NUL-padded to 4 registers)
//	holding 20..119 uint16        load: register 20+i holds (n+i) mod 65536
//	input 0..1      float32 ABCD  temperature: 20 + 5·sin(2π·n/120) degC
//	input 2..5      float64 ABCD  energy: n/4 kWh
//	coil 0          running (as status bit 0)
//	coil 1          toggles every tick (n odd)
//	discrete 0      alarm (as status bit 1)
//	discrete 1      power ok: always true
//
// Holding 0..119 is one 120-register block for benchmarks. DemoTags
// describes the named values as tags. Tick needs a table size of at least
// 120 holding, 6 input, 2 coil and 2 discrete.
func (s *ModbusServer) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick++
	n := s.tick
	sine := 100 * math.Sin(2*math.Pi*float64(n%60)/60)
	wave := math.Sin(2 * math.Pi * float64(n%120) / 120)
	running := (n/30)%2 == 0
	alarm := n%100 >= 95
	var status uint16
	if running {
		status |= 1
	}
	if alarm {
		status |= 2
	}
	put := func(t modbus.Table, off uint16, typ modbus.Type, o modbus.Order, v telemetry.Value) {
		var buf [8]byte
		b, _ := modbus.AppendRegisters(buf[:0], typ, o, 0, v)
		_ = s.putLocked(t, off, b)
	}
	put(modbus.HoldingRegister, 0, modbus.TypeUint32, modbus.ABCD, telemetry.Uint(n&math.MaxUint32))
	put(modbus.HoldingRegister, 2, modbus.TypeFloat32, modbus.ABCD, telemetry.Float(sine))
	put(modbus.HoldingRegister, 4, modbus.TypeFloat32, modbus.CDAB, telemetry.Float(sine))
	put(modbus.HoldingRegister, 6, modbus.TypeInt16, modbus.ABCD, telemetry.Int(200+int64(math.Round(50*wave))))
	setRegs(s.holding, 7, []uint16{uint16(n % 1000), status})
	recipe := [8]byte{'R', 'C', 'P', '-', '0' + byte(n/100/100%10), '0' + byte(n/100/10%10), '0' + byte(n/100%10), 0}
	_ = s.putLocked(modbus.HoldingRegister, 10, recipe[:])
	for i := range uint64(100) {
		r := uint16(n + i)
		s.holding[2*(20+i)], s.holding[2*(20+i)+1] = byte(r>>8), byte(r)
	}
	put(modbus.InputRegister, 0, modbus.TypeFloat32, modbus.ABCD, telemetry.Float(20+5*wave))
	put(modbus.InputRegister, 2, modbus.TypeFloat64, modbus.ABCD, telemetry.Float(float64(n)/4))
	s.coils[0], s.coils[1] = running, n%2 == 1
	s.discrete[0], s.discrete[1] = alarm, true
}

// Animate calls Tick every interval until ctx is done.
func (s *ModbusServer) Animate(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Tick()
		}
	}
}

// DemoTags returns tags for the values Tick animates, for `fieldgate demo`
// and examples. Their Poll is zero: the device's poll interval applies.
func DemoTags() []modbus.Tag {
	off := func(o uint16) *uint16 { return &o }
	bit := func(b uint8) *uint8 { return &b }
	scale := 0.1
	return []modbus.Tag{
		{Name: "counter", Table: modbus.HoldingRegister, Offset: off(0), Type: modbus.TypeUint32},
		{Name: "sine", Table: modbus.HoldingRegister, Offset: off(2), Type: modbus.TypeFloat32},
		{Name: "sine_cdab", Table: modbus.HoldingRegister, Offset: off(4), Type: modbus.TypeFloat32, Order: modbus.CDAB},
		{Name: "temperature_x10", Table: modbus.HoldingRegister, Offset: off(6), Type: modbus.TypeInt16, Scale: &scale, Unit: "degC"},
		{Name: "sawtooth", Table: modbus.HoldingRegister, Offset: off(7), Type: modbus.TypeUint16},
		{Name: "running_bit", Table: modbus.HoldingRegister, Offset: off(8), Type: modbus.TypeBool, Bit: bit(0)},
		{Name: "alarm_bit", Table: modbus.HoldingRegister, Offset: off(8), Type: modbus.TypeBool, Bit: bit(1)},
		{Name: "recipe", Table: modbus.HoldingRegister, Offset: off(10), Type: modbus.TypeString, Length: 4},
		{Name: "temperature", Table: modbus.InputRegister, Offset: off(0), Type: modbus.TypeFloat32, Unit: "degC"},
		{Name: "energy", Table: modbus.InputRegister, Offset: off(2), Type: modbus.TypeFloat64, Unit: "kWh"},
		{Name: "running", Table: modbus.Coil, Offset: off(0), Type: modbus.TypeBool},
		{Name: "toggle", Table: modbus.Coil, Offset: off(1), Type: modbus.TypeBool},
		{Name: "alarm", Table: modbus.DiscreteInput, Offset: off(0), Type: modbus.TypeBool},
		{Name: "power_ok", Table: modbus.DiscreteInput, Offset: off(1), Type: modbus.TypeBool},
	}
}
