package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/mqgate/mqgate/config"
)

// Kinds are the object collections of the Admin API, named as APISIX's
// paths and mqgate's YAML sections name them.
var Kinds = []string{"stream_routes", "upstreams", "ssls", "routes"}

// Object is one object created through the Admin API.
type Object struct {
	ID            string          `json:"id"`
	CreatedIndex  uint64          `json:"created_index"`
	ModifiedIndex uint64          `json:"modified_index"`
	CreateTime    int64           `json:"create_time"` // unix seconds, as APISIX reports
	UpdateTime    int64           `json:"update_time"`
	Value         json.RawMessage `json:"value"` // the request body with its id, as YAML validates it
}

// State is every object created through the Admin API: what the state file
// holds. Index counts writes, like etcd's revision in APISIX.
type State struct {
	Version int                 `json:"version"`
	Index   uint64              `json:"index"`
	Objects map[string][]Object `json:"objects"` // by kind, in creation order
	// Revision is the etcd revision of the objects when the state is the
	// cache of an etcd provider (deployment.etcd.cache_file); 0 otherwise.
	Revision int64 `json:"etcd_revision,omitempty"`
}

const stateVersion = 1

// LoadState reads the state file; a missing file is an empty state.
func LoadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: stateVersion, Objects: map[string][]Object{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin state: %w", err)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("admin state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("admin state %s: version %d, this mqgate reads version %d", path, st.Version, stateVersion)
	}
	for kind := range st.Objects {
		if !slices.Contains(Kinds, kind) {
			return nil, fmt.Errorf("admin state %s: unknown kind %q", path, kind)
		}
	}
	if st.Objects == nil {
		st.Objects = map[string][]Object{}
	}
	return &st, nil
}

// Save writes the state so that a crash at any moment leaves either the
// old file or the new one: a temporary file in the same directory, fsync,
// rename over the old one, fsync of the directory. The file is readable by
// its owner only: ssls objects hold private keys.
func (st *State) Save(path string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("admin state: %w", err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("admin state: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("admin state: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("admin state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("admin state: fsync %s: %w", dir, err)
	}
	return nil
}

// clone copies the state deeply enough to change a copy.
func (st *State) clone() *State {
	c := &State{Version: st.Version, Index: st.Index, Revision: st.Revision, Objects: make(map[string][]Object, len(st.Objects))}
	for kind, objs := range st.Objects {
		c.Objects[kind] = slices.Clone(objs)
	}
	return c
}

// find returns the position of kind/id, or -1.
func (st *State) find(kind, id string) int {
	return slices.IndexFunc(st.Objects[kind], func(o Object) bool { return o.ID == id })
}

// put creates or replaces kind/id and reports whether it created it.
func (st *State) put(kind, id string, value json.RawMessage, now int64) (Object, bool) {
	st.Index++
	if i := st.find(kind, id); i >= 0 {
		o := &st.Objects[kind][i]
		o.Value, o.ModifiedIndex, o.UpdateTime = value, st.Index, now
		return *o, false
	}
	o := Object{ID: id, CreatedIndex: st.Index, ModifiedIndex: st.Index, CreateTime: now, UpdateTime: now, Value: value}
	st.Objects[kind] = append(st.Objects[kind], o)
	return o, true
}

func (st *State) remove(kind, id string) bool {
	i := st.find(kind, id)
	if i < 0 {
		return false
	}
	st.Index++
	st.Objects[kind] = slices.Delete(st.Objects[kind], i, i+1)
	return true
}

// count is how many objects the state holds.
func (st *State) count() int {
	n := 0
	for _, objs := range st.Objects {
		n += len(objs)
	}
	return n
}

// overlay renders the state as a config.Document that replaces file objects
// by id. It is JSON, which YAML reads, so the objects are validated by the
// same decoder as the files, one object per line range.
func (st *State) overlay(name string) config.Document {
	doc := make(map[string][]json.RawMessage)
	for _, kind := range Kinds {
		for _, o := range st.Objects[kind] {
			doc[kind] = append(doc[kind], o.Value)
		}
	}
	data, _ := json.MarshalIndent(doc, "", "  ") // RawMessages that were valid JSON when stored
	return config.Document{Name: name, Data: data, Overlay: true}
}
