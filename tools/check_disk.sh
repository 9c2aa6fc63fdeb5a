#!/usr/bin/env bash
# Before a new .venv is made: fail with a clear message if the disk cannot hold it (arg 1: the MB it needs).
need_mb=$1
free_mb=$(df -Pm . | awk 'NR==2 {print $4}')
if [ "$free_mb" -lt "$need_mb" ]; then
  echo "make setup: the virtual environment .venv needs about $need_mb MB (PyTorch and what it loads)," \
       "but only $free_mb MB are free on $(df -P . | awk 'NR==2 {print $6}'). Free some disk and run make setup again." >&2
  exit 1
fi
