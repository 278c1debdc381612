"""A fake `xcrun` for tests: answers `xcrun devicectl list devices --json-output FILE` the way
Xcode's devicectl does (the fields coremltools' remote_device reads), from
$FAKE_XCRUN_DIR/devices.json. $FAKE_XCRUN_MODE: `fail` (devicectl errors out), `garbage`
(unparseable JSON)."""

import json
import os
import sys
from pathlib import Path

args = sys.argv[1:]
if args[:3] != ["devicectl", "list", "devices"] or "--json-output" not in args:
    print(f"xcrun: error: unable to handle {' '.join(args)!r} (fake xcrun)", file=sys.stderr)
    sys.exit(72)
out = Path(args[args.index("--json-output") + 1])
mode = os.environ.get("FAKE_XCRUN_MODE", "")
if mode == "fail":
    print("ERROR: The operation couldn't be completed. (CoreDeviceService unavailable)", file=sys.stderr)
    sys.exit(1)
if mode == "garbage":
    out.write_text("{ not json")
    sys.exit(0)
devices = json.loads((Path(os.environ["FAKE_XCRUN_DIR"]) / "devices.json").read_text())
out.write_text(json.dumps({"info": {"outcome": "success"}, "result": {"devices": [{
    "identifier": d["udid"].lower(),
    "deviceProperties": {"name": d["name"], "osVersionNumber": d["os"], "osBuildUpdate": "22B83",
                         "developerModeStatus": d.get("developer_mode", "enabled")},
    "hardwareProperties": {"deviceType": d.get("type", "iPhone"), "udid": d["udid"], "productType": d["product"],
                           "marketingName": d.get("marketing", "")},
    "connectionProperties": {"tunnelState": d.get("state", "connected")},
} for d in devices]}}))
print(f"Devices written to: {out}")
