package api

import (
	"context"
	"net/http"
)

// PathReload makes the agent re-read its config file (POST, token).
const PathReload = "/v1/reload"

// ReloadResponse is what a reload did: the agent re-read the config it
// was started with (the same file, environment and flags; never a path a
// client names) and compared it key by key with the one in force.
type ReloadResponse struct {
	// File is the config file re-read ("" when the agent was started
	// without one: only the environment and flags were read again).
	File string `json:"file"`
	// Applied are the changed keys that were applied at once.
	Applied []ReloadChange `json:"applied"`
	// Restart are the changed keys that need a restart of the agent:
	// they were left as they were.
	Restart []ReloadChange `json:"restart"`
}

// ReloadChange is one changed key and its values as `redleader config`
// shows them (secrets hidden).
type ReloadChange struct {
	Key string `json:"key"`
	Old string `json:"old"`
	New string `json:"new"`
	// Policy, for an applied shaping rate, is the committed policy's rate
	// that stays in force instead (the configured rate is this agent's
	// default where the policy sets none); "" when the new value is in
	// force.
	Policy string `json:"policy,omitempty"`
	// Note says how the key was applied, or why it needs a restart, when
	// there is more to say.
	Note string `json:"note,omitempty"`
}

// Reload is POST /v1/reload (token): the agent re-reads its config file
// and applies what can change live. A bad file is refused whole (*Error
// with Status 422 and the same messages as at start-up): the running
// config stays.
func (c *Client) Reload(ctx context.Context) (ReloadResponse, error) {
	var out ReloadResponse
	return out, c.Do(ctx, http.MethodPost, PathReload, nil, &out)
}
