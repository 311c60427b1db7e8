#!/usr/bin/env bash
# Download PASCAL VOC 2007 (trainval + test, with annotations) into ROOT/VOC2007 (default ./datasets),
# the layout Detectron2 and accel-det expect (datasets/README.md). Needs curl or wget, and tar.
set -euo pipefail
ROOT="${1:-${DETECTRON2_DATASETS:-datasets}}"
MIRROR="${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2007}"
FILES=(VOCtrainval_06-Nov-2007.tar VOCtest_06-Nov-2007.tar)
mkdir -p "$ROOT"
cd "$ROOT"
fetch() {
  if command -v curl >/dev/null 2>&1; then curl -fL --retry 3 -o "$1.part" "$MIRROR/$1"
  else wget -O "$1.part" "$MIRROR/$1"; fi
  mv "$1.part" "$1"
}
for f in "${FILES[@]}"; do
  [ -f "$f" ] || { echo "downloading $MIRROR/$f"; fetch "$f"; }
  echo "unpacking $f"
  tar -xf "$f"
done
# the archives unpack to VOCdevkit/VOC2007; Detectron2 expects VOC2007 directly under the root
if [ -d VOCdevkit/VOC2007 ] && [ ! -e VOC2007 ]; then ln -s VOCdevkit/VOC2007 VOC2007; fi
for part in Annotations JPEGImages ImageSets/Main/trainval.txt ImageSets/Main/test.txt; do
  [ -e "VOC2007/$part" ] || { echo "error: VOC2007/$part is missing after unpacking" >&2; exit 1; }
done
echo "VOC 2007 ready in $(pwd)/VOC2007: $(wc -l < VOC2007/ImageSets/Main/trainval.txt) trainval, $(wc -l < VOC2007/ImageSets/Main/test.txt) test images"
echo "(the .tar files can be deleted)"
