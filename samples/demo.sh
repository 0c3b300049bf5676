#!/usr/bin/env bash
# The demo behind `make demo`: blur a sample, apply the transpose, measure both.
# Then analyze, roundtrip, and one volume (a z-stack) through convolve, invert and compare.
set -euo pipefail
OUT=${OUT:-demo-out}
mkdir -p "$OUT"
K=gaussian:sigma=2
set -x
deconv kernels show "$K" --precision 3 | head -n 4
deconv convolve samples/camera.png -k "$K" --noise gaussian:sigma=0.01 --seed 0 \
    -o "$OUT/camera_blurred.npy" --overwrite
deconv transpose "$OUT/camera_blurred.npy" -k "$K" -o "$OUT/camera_transpose.npy" --overwrite
# A conv layer whose filters form an orthogonal transform: here the transpose IS the inverse.
HAAR=(-k samples/haar_bank.npy --correlate --stride 2 --mode valid)
deconv convolve samples/camera.png "${HAAR[@]}" -o "$OUT/camera_haar.npy" --overwrite
deconv transpose "$OUT/camera_haar.npy" "${HAAR[@]}" -o "$OUT/camera_haar_back.npy" --overwrite
deconv compare samples/camera.png "$OUT/camera_blurred.npy" "$OUT/camera_transpose.npy" \
    "$OUT/camera_haar_back.npy" --data-range 1 --metrics psnr,ssim,max_error
# When can the blur be undone? The operator's rank, conditioning and noise amplification:
deconv analyze samples/camera.png -k "$K" --spectrum "$OUT/camera_spectrum.png" --overwrite
# The whole experiment: blur, then transpose vs every inversion method.
# A mild blur stored at 16 bits: the exact inverse works, and the transpose is far behind.
deconv roundtrip samples/camera.png -k gaussian:sigma=1 --bits 16
# A stronger blur with 1% noise: the exact inverse amplifies the noise past use
# ("invertible but ill-conditioned"); the regularized methods still gain.
deconv roundtrip samples/camera.png -k gaussian:sigma=2 --noise gaussian:sigma=0.01 --seed 0 \
    --montage "$OUT/camera_montage.png" --overwrite
# A volume: a synthetic z-stack (samples/make_stack.py; ImageJ TIFF, voxel 0.25 x 0.1 x 0.1 µm)
# blurred by a widefield microscope PSF with Poisson noise, then deconvolved.
PSF=widefield:na=1.4,wavelength=0.52,n=1.515,dxy=0.1,dz=0.25,size=15,depth=15
deconv convolve samples/blobs3d.tif -k "$PSF" --noise poisson:peak=200 --seed 0 \
    -o "$OUT/blobs3d_blurred.tif" --overwrite
deconv invert "$OUT/blobs3d_blurred.tif" -k "$PSF" -o "$OUT/blobs3d_default.tif" --overwrite
# Richardson-Lucy stops by itself: the Poisson discrepancy principle on the photon noise.
deconv invert "$OUT/blobs3d_blurred.tif" -k "$PSF" -m richardson-lucy \
    -o "$OUT/blobs3d_rl.tif" --overwrite
deconv compare samples/blobs3d.tif "$OUT/blobs3d_blurred.tif" "$OUT/blobs3d_default.tif" \
    "$OUT/blobs3d_rl.tif" --metrics psnr,ssim
