#!/usr/bin/env python3
"""Turns a container of deploy/kubernetes/deployment.yaml into `podman run` arguments, so the image is
run the way the manifest runs it: user, capabilities, no_new_privs, read-only root, volumes (emptyDir
as a fresh 0777 directory or a 0777 tmpfs for medium Memory, as the kubelet makes them; secrets as
files with the volume's defaultMode), envFrom the ConfigMap, env and secretKeyRef values.

  pod.py MANIFEST CONTAINER --root DIR [--secret NAME/KEY=VALUE]... [--set NAME=VALUE]...

Prints the arguments NUL-separated (for `mapfile -d ''`). --set overrides an environment variable
after the manifest's own (the test's listen address, the mock API). Volume directories are made
under DIR once and shared by every container of the pod, as a pod's volumes are.
"""
import argparse
import os
import sys

import yaml


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("container")
    ap.add_argument("--root", required=True)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()

    docs = [d for d in yaml.safe_load_all(open(a.manifest)) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {}
    for item in a.secret:
        ref, value = item.split("=", 1)
        name, key = ref.split("/", 1)
        secrets.setdefault(name, {})[key] = value

    pod = deployment["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    c = next(x for x in containers if x["name"] == a.container)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = []

    # Who the process is and what it may do: the pod's context, then the container's.
    ctx = dict(pod.get("securityContext", {}))
    ctx.update(c.get("securityContext", {}))
    if "runAsUser" in ctx:
        args.append(f"--user={ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}")
    caps = ctx.get("capabilities", {})
    for cap in caps.get("drop", []):
        args.append(f"--cap-drop={cap.lower()}")
    for cap in caps.get("add", []):
        args.append(f"--cap-add={cap.lower()}")
    if ctx.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    if ctx.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if ctx.get("privileged"):
        args.append("--privileged")

    # Volumes.
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        ro = ",ro" if m.get("readOnly") else ""
        if "emptyDir" in v:
            if v["emptyDir"].get("medium") == "Memory":
                args.append(f"--mount=type=tmpfs,destination={m['mountPath']},tmpfs-mode=0777")
                continue
            host = os.path.join(a.root, "volumes", m["name"])
            if not os.path.isdir(host):
                os.makedirs(host)
                os.chmod(host, 0o777)
        elif "secret" in v:
            s = v["secret"]
            host = os.path.join(a.root, "secrets", m["name"])
            data = secrets.get(s["secretName"])
            if data is None:
                if s.get("optional"):
                    continue
                sys.exit(f"pod.py: secret {s['secretName']} is needed by {a.container} and not given")
            if not os.path.isdir(host):
                os.makedirs(host)
                os.chmod(host, 0o755)
                for key, value in data.items():
                    path = os.path.join(host, key)
                    with open(path, "w") as f:
                        f.write(value)
                    os.chmod(path, s.get("defaultMode", 0o644))
            ro = ",ro"
        else:
            sys.exit(f"pod.py: volume {m['name']} is neither emptyDir nor secret")
        if "subPath" in m:
            host = os.path.join(host, m["subPath"])
        args.append(f"--volume={host}:{m['mountPath']}{ro.replace(',', ':', 1) if ro else ''}")

    # Environment, in the kubelet's order: envFrom, then env, then the test's overrides.
    env = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            env.update(config_maps[src["configMapRef"]["name"]])
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = config_maps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref.get("optional") and ref["key"] not in secrets.get(ref["name"], {}):
                continue  # as the kubelet does: an optional key that is absent sets nothing
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for item in a.set:
        name, value = item.split("=", 1)
        env[name] = value
    for name, value in env.items():
        args.append(f"--env={name}={value}")

    if c.get("command"):
        args.append("--entrypoint=" + c["command"][0])
        rest = c["command"][1:] + c.get("args", [])
    else:
        rest = c.get("args", [])
    sys.stdout.write("\0".join(args + ["--"] + rest) + "\0")


if __name__ == "__main__":
    main()
