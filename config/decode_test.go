package config

import "testing"

func TestSuggest(t *testing.T) {
	keys := []string{"name", "address", "table", "offset", "type", "order", "bit", "length", "scale", "value_offset", "unit", "poll"}
	for _, tc := range []struct{ in, want string }{
		{"tpye", "type"},
		{"adress", "address"},
		{"addresss", "address"},
		{"valueOffset", "value_offset"},
		{"value-offset", "value_offset"},
		{"Name", "name"},
		{"lenght", "length"},
		{"ordr", "order"},
		{"deadband", ""},
		{"x", ""},
		{"colour", ""},
	} {
		if got := suggest(tc.in, keys); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"type", "type", 0}, {"tpye", "type", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"ca", "abc", 3},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
