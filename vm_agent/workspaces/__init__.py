"""Workspaces: the host VM and Docker containers, each with its own terminals and agents.

placement.py   where a terminal/agent runs (host as is; container via `container.py`)
model.py       a workspace's parameters, status values and their validation
manager.py     WorkspaceManager: records, the status machine, adoption, placements
provision.py   bringing one container up (image, volume, container, git setup, clone)
gitcreds.py    the 0600 credential file + helper that give git its token
container.py   ContainerPlacement: `docker exec`, secret env files, reaping on exit
records.py     workspace metadata in the SQLite store
docker.py      the Docker Engine through the `docker` SDK (the only module importing it)
http.py        the /workspaces routes
"""
