"""Container images: render a build context from a spec and build, smoke-test, run and push it.

- `context`, `dockerfile`, `lock`: pure rendering of `.modelpod/build/` (Dockerfile, locked requirements,
  modelpod's wheel, weights, user code, spec).
- `engine`, `runner`: docker (BuildKit or the legacy builder), podman and buildah, as argv per engine
  run through one small `CommandRunner` interface.
- `pipeline`: build -> sizes -> SBOM -> smoke test -> push; `run_image`; `smoke`, `sbom`, `layers`,
  `doctor` hold one step each.

Nothing here is imported by `import modelpod` or by the server.
"""
