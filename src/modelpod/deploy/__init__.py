"""Kubernetes: pure rendering of manifests (`render`) and the cluster adapter that applies them.

Nothing here is imported by `import modelpod`; the renderer needs only the standard library and the
resolved spec, so it can run where no cluster client is installed.
"""
