package telemetry

import "time"

// Point is one reading of one tag.
type Point struct {
	Tag     string    // the tag's name, unique within its device
	Value   Value     // the reading; KindNone when Quality is Bad and nothing was read
	Quality Quality   // Good unless something went wrong
	Time    time.Time // source timestamp where the device gives one, else read time
	Unit    string    // engineering unit from the tag's configuration, may be empty
}

// Batch is one device's readings from one poll or one subscription
// notification. A Batch is not safe for concurrent mutation.
type Batch struct {
	Device string
	Points []Point
}

// Record is a Batch as the buffer holds it, with the sequence number the
// buffer gave it. Sequence numbers grow by one per record, in append order.
type Record struct {
	Seq   uint64
	Batch Batch
}
