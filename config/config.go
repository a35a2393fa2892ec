package config

import (
	"os"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/collector/opcua"
)

// Defaults applied by Load and Parse to keys that are absent (or null).
const (
	DefaultBufferPath     = "/var/lib/fieldgate/buffer.db"
	DefaultMaxBytes       = ByteSize(1 << 30) // 1GiB
	DefaultSyncInterval   = time.Second
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultWindow         = 100
	DefaultQoS            = 1
	DefaultPrefix         = "fieldgate"
	DefaultTopic          = "{prefix}/{gateway}/{device}"
	DefaultStatusTopic    = "{prefix}/{gateway}/status"
	DefaultAPIListen      = "127.0.0.1:8080"
	DefaultPoll           = time.Second
	DefaultProfilesDir    = "profiles"
	// MinPoll is the shortest poll interval a device or tag may ask for.
	MinPoll = 10 * time.Millisecond
	// MinMaxBytes is the smallest buffer.max_bytes accepted.
	MinMaxBytes = ByteSize(1 << 20)
	// MaxPause is the longest modbus.pause accepted.
	MaxPause = 10 * time.Second
	// MaxDescription is the longest tag description accepted, in characters.
	MaxDescription = 256
	// DefaultAuditBytes and DefaultAuditFiles bound the audit log: it is
	// rotated at DefaultAuditBytes and DefaultAuditFiles old files are
	// kept. The default audit.path is audit.log beside the buffer file.
	DefaultAuditBytes = ByteSize(10 << 20) // 10MiB
	DefaultAuditFiles = 5
	// MinAuditBytes and MaxAuditFiles limit audit.max_bytes and audit.files.
	MinAuditBytes = ByteSize(64 << 10)
	MaxAuditFiles = 100
)

// Values of Buffer.Sync and MQTT.Format.
const (
	SyncAlways   = "always"   // fsync every commit
	SyncInterval = "interval" // fsync every sync_interval; a bounded window of loss
	FormatJSON   = "json"
	// FormatSparkplugB is Sparkplug B 3.0 (docs/payload-sparkplug.md).
	FormatSparkplugB = "sparkplugb"
	// FormatThingsBoard is ThingsBoard's gateway API (docs/payload-thingsboard.md).
	FormatThingsBoard = "thingsboard"
)

// Config is the whole gateway configuration as read from one YAML file.
// After Load it holds every default, and it is only read from then on, so
// it is safe for concurrent reads. Printing it never shows a secret (see
// Secret).
type Config struct {
	Gateway Gateway `yaml:"gateway"`
	Buffer  Buffer  `yaml:"buffer"`
	API     API     `yaml:"api"`
	MQTT    MQTT    `yaml:"mqtt"`
	Audit   Audit   `yaml:"audit"`
	// ProfilesDir is the folder searched first for device profiles, before
	// the built-in ones; relative to the config file's folder, "profiles"
	// beside it by default. After Load it is the resolved path.
	ProfilesDir string   `yaml:"profiles_dir"`
	Devices     []Device `yaml:"devices"`
	// Source is the file name Load read (the name given to Parse).
	Source string `yaml:"-"`
}

// Gateway identifies this gateway.
type Gateway struct {
	// ID is required, [A-Za-z0-9_.-]+; it is the MQTT client id and the
	// {gateway} of topic templates.
	ID string `yaml:"id"`
}

// Buffer configures the durable store-and-forward queue.
type Buffer struct {
	Path     string   `yaml:"path"`      // bbolt file; relative to the config file's folder
	MaxBytes ByteSize `yaml:"max_bytes"` // the oldest data is dropped past this
	// Sync is SyncAlways (fsync per commit) or SyncInterval (fsync every
	// SyncInterval, less flash wear, bounded loss on power failure).
	Sync         string        `yaml:"sync"`
	SyncInterval time.Duration `yaml:"sync_interval"` // only with SyncInterval
	// MaxAge drops records older than this, counted like byte-bound drops;
	// 0 keeps data until max_bytes forces it out.
	MaxAge time.Duration `yaml:"max_age"`
}

// API configures the management API.
type API struct {
	// Listen is host:port; a non-loopback host requires TokenFile.
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"` // relative to the config file's folder
	// Token is the content of TokenFile, read by Load.
	Token Secret `yaml:"-"`
}

// MQTT configures the uplink.
type MQTT struct {
	URL      string `yaml:"url"` // tcp://host:port or tls://host:port; the port is always set after Load
	Username string `yaml:"username"`
	// Password is the password after ${ENV} expansion, or the content of
	// PasswordFile after Load.
	Password       Secret        `yaml:"password"`
	PasswordFile   string        `yaml:"password_file"`
	TLS            *TLS          `yaml:"tls"` // only with a tls:// URL; nil uses the system roots
	KeepAlive      time.Duration `yaml:"keepalive"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	Window         int           `yaml:"window"` // in-flight publishes, 1..65535
	// ReplayRate caps backlog messages per second while live data goes
	// first; 0 is no cap.
	ReplayRate float64 `yaml:"replay_rate"`
	// QoS is 1: the buffer forgets data only when the broker acknowledges
	// it, which QoS 0 never does, so qos: 0 is rejected.
	QoS    byte   `yaml:"qos"`
	Format string `yaml:"format"` // FormatJSON, FormatSparkplugB or FormatThingsBoard
	// Sparkplug configures format sparkplugb (required with it, refused
	// with the others).
	Sparkplug *Sparkplug `yaml:"sparkplug" json:",omitempty"`
	// Topic and StatusTopic are templates with the placeholders {prefix},
	// {gateway} and (Topic only) {device}.
	Topic       string `yaml:"topic"`
	Prefix      string `yaml:"prefix"`
	StatusTopic string `yaml:"status_topic"`
}

// Sparkplug is the mqtt.sparkplug section. The edge node id is gateway.id.
type Sparkplug struct {
	Group string `yaml:"group"` // Sparkplug group id; required
	// PrimaryHost is the host application whose STATE must be online
	// before the node publishes; empty for none.
	PrimaryHost string `yaml:"primary_host"`
	// DataQoS is the QoS of DDATA: 0 as the specification requires
	// (default; data is lost if the link dies with it in flight), or 1 to
	// keep the buffer's at-least-once delivery.
	DataQoS byte `yaml:"data_qos"`
}

// TLS holds the files for tls:// broker URLs, relative to the config
// file's folder; ${ENV} in them is expanded (for example
// ${CREDENTIALS_DIRECTORY}/gw.key under systemd). Load does not read them;
// the gateway does when it starts. The broker's certificate is always
// verified unless InsecureSkipVerify is set.
type TLS struct {
	CAFile   string `yaml:"ca_file"`   // PEM roots; the system roots when empty
	CertFile string `yaml:"cert_file"` // client certificate for mutual TLS, with KeyFile
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the broker's certificate must carry (and the
	// TLS SNI); empty means the host of mqtt.url.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate, so anyone on the
	// path can read and change the traffic. For bench tests only; the
	// gateway logs a warning at every start while it is set.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Audit configures the audit log: JSON lines of every write attempt and
// of buffer drops, rotated by size. At most (Files+1) × MaxBytes bytes are
// kept.
type Audit struct {
	// Path is the log file; relative to the config file's folder, and
	// audit.log beside buffer.path by default. Rotated files get .1, .2, ...
	Path     string   `yaml:"path"`
	MaxBytes ByteSize `yaml:"max_bytes"` // the file is rotated before it grows past this
	Files    int      `yaml:"files"`     // rotated files kept
}

// Device is one device the gateway polls. It has exactly one connection
// section: Modbus or OPCUA.
type Device struct {
	Name string `yaml:"name"` // required, unique, [A-Za-z0-9_.-]+
	// Modbus is a Modbus device's connection. After Load, Modbus.Poll and
	// Modbus.Tags hold Poll and Tags, so the driver needs nothing else.
	Modbus *modbus.Config `yaml:"modbus" json:",omitempty"`
	// OPCUA is an OPC UA server's connection. After Load, OPCUA.Poll and
	// OPCUA.Tags hold Poll and OPCUATags.
	OPCUA *opcua.Config `yaml:"opcua" json:",omitempty"`
	// Profile names a device profile, <name>.yaml in ProfilesDir or built
	// in, whose tags the device gets and whose poll and modbus settings are
	// the device's defaults. Modbus devices only.
	Profile string `yaml:"profile"`
	// TagsCSV is a CSV file of more tags, one a row; relative to the config
	// file's folder. After Load it is the resolved path. Modbus devices
	// only.
	TagsCSV string        `yaml:"tags_csv"`
	Poll    time.Duration `yaml:"poll"`
	// PollOffset moves the device's poll instants this far past the
	// clock's multiples of each interval (0 ≤ offset < the shortest).
	PollOffset time.Duration `yaml:"poll_offset"`
	// Tags are a Modbus device's tags written under tags:. After Load they
	// are all the device's tags: the profile's, then these, then those of
	// TagsCSV. Empty for an OPC UA device.
	Tags []modbus.Tag `yaml:"tags"`
	// OPCUATags are an OPC UA device's tags, also written under tags: (the
	// decoder picks the tag kind from the device's connection section).
	OPCUATags []opcua.Tag `yaml:"-" json:"-"`
}

// Load reads the file at path and returns its configuration with defaults
// set, or every problem found, joined. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ShortestPoll returns the shortest poll interval of the device and its
// tags.
func (d *Device) ShortestPoll() time.Duration {
	shortest := d.Poll
	for _, t := range d.Tags {
		if t.Poll > 0 && t.Poll < shortest {
			shortest = t.Poll
		}
	}
	for _, t := range d.OPCUATags {
		if t.Poll > 0 && t.Poll < shortest {
			shortest = t.Poll
		}
	}
	return shortest
}
