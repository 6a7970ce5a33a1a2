"""What the distributed test files share: a free local port for a rendezvous and the tiny SMI job."""

from __future__ import annotations

import socket

SMI = ["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "smi", "--num-images", "8",
       "--seed", "3", "--set", "batch_size=2", "--set", "iterations=6", "--set", "schedule=2:0.5,4:0.5"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
