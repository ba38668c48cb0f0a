// Command argocd-health runs an Argo CD resource health script (health.lua) on one object, in
// gopher-lua, the interpreter Argo CD embeds, set up as Argo CD sets it up for a script from
// argocd-cm: only the package, base and table libraries are open (every standard library with
// -open-libs, as `resource.customizations.useOpenLibs` does), the object is the global `obj`,
// and the script has one second to return.
//
//	argocd-health [-open-libs] health.lua object.yaml
//
// It prints the returned table as JSON, {"status": ..., "message": ...}, as Argo CD reads it:
// a status that is not one of Argo CD's health codes becomes Unknown. A script error, or a
// script that returns something other than a table, exits 1 with the error on stderr; bad
// arguments or an unreadable file exit 2.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// The health codes Argo CD accepts from a script.
var validStatus = map[string]bool{
	"Healthy":     true,
	"Progressing": true,
	"Degraded":    true,
	"Suspended":   true,
	"Missing":     true,
	"Unknown":     true,
}

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	openLibs := flag.Bool("open-libs", false, "open every Lua standard library (Argo CD's useOpenLibs)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: argocd-health [-open-libs] health.lua object.yaml")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	script, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail(2, "reading the script: %v", err)
	}
	raw, err := os.ReadFile(flag.Arg(1))
	if err != nil {
		fail(2, "reading the object: %v", err)
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		fail(2, "parsing the object %s: %v", flag.Arg(1), err)
	}
	result, err := run(string(script), obj, *openLibs)
	if err != nil {
		fail(1, "%s: %v", flag.Arg(0), err)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fail(1, "encoding the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", args...)
	os.Exit(code)
}

func run(script string, obj map[string]any, openLibs bool) (*healthStatus, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, obj))
	if err := state.DoString(script); err != nil {
		return nil, err
	}
	returned := state.Get(-1)
	if returned.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return nil, fmt.Errorf("encoding the returned table: %w", err)
	}
	result := &healthStatus{}
	if err := json.Unmarshal(encoded, result); err != nil {
		return nil, fmt.Errorf("the returned table is not a health status: %w", err)
	}
	if !validStatus[result.Status] {
		return &healthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return result, nil
}

// toLua converts a decoded JSON or YAML value into Lua values, as Argo CD hands an object to a
// script: objects become tables keyed by string, arrays become sequences, null becomes nil.
func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(string(v))
	case []any:
		table := state.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]any:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	}
	return lua.LNil
}
