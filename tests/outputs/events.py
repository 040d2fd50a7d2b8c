"""Reading TensorBoard event files back in tests (TFRecords of tensorboardX's Event protos)."""
import glob
import os
import struct
from typing import Dict, Tuple

import cv2
import numpy as np


def images(logdir: str) -> Dict[str, Tuple[int, int]]:
  """{tag: (height, width)} of the image summaries in `logdir`'s event files (TFRecords)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for path in glob.glob(os.path.join(logdir, 'events.out.tfevents.*')):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):       # length (8 bytes), its CRC (4), the record, its CRC (4)
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        if value.HasField('image'):
          decoded = cv2.imdecode(np.frombuffer(value.image.encoded_image_string, np.uint8),
                                 cv2.IMREAD_COLOR)
          assert decoded.shape[:2] == (value.image.height, value.image.width)
          found[value.tag] = decoded.shape[:2]
  return found
