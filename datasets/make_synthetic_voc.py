#!/usr/bin/env python
"""Write the synthetic VOC-format data set (not PASCAL VOC: shapes on clutter; see datasets/README.md).

    python datasets/make_synthetic_voc.py datasets/synthetic_voc --num-trainval 400 --num-test 200

It registers as ``synthetic_voc_{trainval,train,val,test}`` when it sits at
``$DETECTRON2_DATASETS/synthetic_voc``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from accel_det.detection.synthetic import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
