"""OS errors name the file they happened on (issue 23 item 10): with a file-size limit (a stand-in
for a full disk) every writer's error names its target, and the command prints it in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(r'''
    import json, os, resource, signal, sys
    import numpy as np
    from lh2face_plugin.cli import describe_error
    from lh2face_plugin.data.recordio import IRHeader, MXIndexedRecordIO, pack
    from lh2face_plugin.fileio import save_npy, write_json

    out = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    report = {}

    def rec():
        with MXIndexedRecordIO(os.path.join(out, "t.idx"), os.path.join(out, "t.rec"), "w") as w:
            for k in range(40):
                w.write_idx(k, pack(IRHeader(0, 0.0, k, 0), bytes(4096)))

    for name, fn, target in (("json", lambda: write_json(os.path.join(out, "r.json"), list(range(40000))), "r.json"),
                             ("npy", lambda: save_npy(os.path.join(out, "f.npy"), np.zeros(40000)), "f.npy"),
                             ("rec", rec, "t.rec")):
        try:
            fn()
            report[name] = "no error"
        except OSError as exc:
            report[name] = [exc.filename == os.path.join(out, target), describe_error(exc)[0]]
    print(json.dumps(report))
''')


def test_a_write_cut_by_the_file_size_limit_names_its_file(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, target in (("json", "r.json"), ("npy", "f.npy"), ("rec", "t.rec")):
        named, line = report[name]
        assert named, report[name]
        assert line.startswith(os.path.join(str(tmp_path), target) + ": "), line
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".json", ".npy", ".rec", ".idx"))]  # nothing half
