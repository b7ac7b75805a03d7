// Package recent keeps short lists of the most recent distinct names
// (the agents and sessions that tried a discovered host), bounded so
// that no caller can grow one without limit.
package recent

import "slices"

// Add returns list with v as its newest value: moved to the end when
// present, appended otherwise, and the oldest dropped beyond max.
// Empty values are not added. list may be modified.
func Add(list []string, v string, max int) []string {
	if v == "" || max <= 0 {
		return list
	}
	if i := slices.Index(list, v); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	list = append(list, v)
	if len(list) > max {
		list = slices.Delete(list, 0, len(list)-max)
	}
	return list
}

// Merge adds newer's values to older in order (newer's last is the
// newest of the result), keeping at most max.
func Merge(older, newer []string, max int) []string {
	out := slices.Clone(older)
	for _, v := range newer {
		out = Add(out, v, max)
	}
	return out
}
