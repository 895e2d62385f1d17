"""Person boxes from keypoints (VIBE/TCMR protocol) and affine crops."""

import cv2
import numpy as np
import pytest

from stdformer.data import crops


def _person(center, height, num_frames, conf=0.9, rng=None, jitter=0.0):
    """(N,18,3) keypoints spread over a box of `height` x height/2 around `center`."""
    rng = rng or np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.linspace(-0.25, 0.25, 3), np.linspace(-0.5, 0.5, 6)),
                    -1).reshape(18, 2)
    grid[[0, -1]] = [[0.0, -0.5], [0.0, 0.5]]  # extent exactly height tall
    base = np.asarray(center, float) + grid * height
    xy = np.repeat(base[None], num_frames, axis=0)
    xy += rng.normal(0, jitter, size=(num_frames, 1, 2))  # whole-person detection jitter
    return np.concatenate([xy, np.full((num_frames, 18, 1), conf)], axis=-1)


def test_box_is_midpoint_of_confident_extent_with_1p1_margin():
    kp = _person((100, 200), 80, 1)
    kp[0, 5, :2] = [1000, 1000]
    kp[0, 5, 2] = 0.2  # below the 0.3 threshold: ignored
    centers, sides, detected = crops.keypoint_boxes(kp)
    assert detected.tolist() == [True]
    np.testing.assert_allclose(centers[0], [100, 200], atol=1e-9)
    np.testing.assert_allclose(sides[0], 1.1 * 80)


def test_six_or_fewer_visible_keypoints_give_no_box():
    kp = _person((50, 50), 40, 3)
    kp[1, 6:, 2] = 0.1  # exactly 6 visible
    kp[2, 7:, 2] = 0.1  # 7 visible
    _, sides, detected = crops.keypoint_boxes(kp)
    assert detected.tolist() == [True, False, True]
    assert np.isnan(sides[1])


def test_missing_frame_is_linearly_interpolated_and_edges_held():
    kp = np.concatenate([_person((100 + 10 * t, 100), 50 + 2 * t, 1) for t in range(5)])
    kp[2, :, 2] = 0.0  # middle frame: no detection
    kp[0, :, 2] = 0.0  # first frame: no detection -> holds frame 1
    track = crops.track_boxes(kp, median_kernel=1, sigma=0)
    assert track.detected.tolist() == [False, True, False, True, True]
    np.testing.assert_allclose(track.centers[2], [120, 100])  # halfway between 110 and 130
    np.testing.assert_allclose(track.sides[2], 1.1 * (52 + 56) / 2)
    np.testing.assert_allclose(track.centers[0], track.centers[1])


def test_smoothing_reduces_jitter_but_keeps_the_mean():
    n = 120
    rng = np.random.default_rng(3)
    kp = _person((300, 200), 150, n, rng=rng, jitter=6.0)
    raw = crops.track_boxes(kp, median_kernel=1, sigma=0)
    smooth = crops.track_boxes(kp)  # median 11, Gaussian sigma 8
    raw_jitter = np.abs(np.diff(raw.centers, axis=0)).mean()
    smooth_jitter = np.abs(np.diff(smooth.centers, axis=0)).mean()
    assert smooth_jitter < raw_jitter / 5
    np.testing.assert_allclose(smooth.centers.mean(axis=0), [300, 200], atol=3.0)


def test_track_without_any_detection_has_no_boxes():
    kp = _person((10, 10), 5, 4, conf=0.1)
    track = crops.track_boxes(kp)
    assert not track.detected.any()
    assert np.isnan(track.centers).all()


def test_affine_maps_box_centre_to_crop_centre_and_square_to_crop_edges():
    affine = crops.crop_affine((640.5, 360.25), side=200, scale=1.2, out_size=64)
    assert affine.shape == (2, 3)
    np.testing.assert_allclose(crops.apply_affine(np.array([640.5, 360.25]), affine), [31.5, 31.5])
    # The crop square (side 240) spans pixel edges -0.5 .. 63.5.
    corners = np.array([[640.5 - 120, 360.25 - 120], [640.5 + 120, 360.25 + 120]])
    np.testing.assert_allclose(crops.apply_affine(corners, affine), [[-0.5, -0.5], [63.5, 63.5]])
    # Rotation turns about the centre.
    rotated = crops.crop_affine((640.5, 360.25), 200, 1.2, 64, rotation_deg=30)
    np.testing.assert_allclose(crops.apply_affine(np.array([640.5, 360.25]), rotated), [31.5, 31.5])


def test_apply_affine_batched_matches_per_frame():
    rng = np.random.default_rng(0)
    affines = np.stack([crops.crop_affine(rng.uniform(0, 100, 2), rng.uniform(20, 50), 1.2, 32)
                        for _ in range(4)])
    points = rng.uniform(0, 100, (4, 7, 2))
    batched = crops.apply_affine(points, affines)
    for i in range(4):
        np.testing.assert_allclose(batched[i], crops.apply_affine(points[i], affines[i]))


def _dot_image(h=480, w=640, dot=(400.0, 150.0)):
    image = np.zeros((h, w, 3), np.uint8)
    cv2.circle(image, (int(dot[0]), int(dot[1])), 12, (255, 255, 255), -1)
    return image


def test_crop_frame_puts_the_box_centre_pixel_at_the_crop_centre():
    image = _dot_image()
    for side in (40.0, 300.0):  # zoom in, and strong zoom out (area-resized path)
        affine = crops.crop_affine((400, 150), side, 1.2, 48)
        crop = crops.crop_frame(image, affine, 48)
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
        ys, xs = np.nonzero(crop[..., 0] > 127)
        assert abs(xs.mean() - 23.5) < 1.0 and abs(ys.mean() - 23.5) < 1.0


def test_crop_outside_the_image_is_black():
    affine = crops.crop_affine((-500, -500), 50, 1.2, 16)
    assert crops.crop_frame(_dot_image(), affine, 16).max() == 0


def test_reduced_jpeg_decode_crops_like_full_decode():
    image = _dot_image(1080, 1920, dot=(1000.0, 500.0))
    image[::7] = 80  # some texture
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    affine = crops.crop_affine((1000, 500), 700, 1.2, 64)
    assert crops.jpeg_reduction(affine) == 8
    fast, fast_affine = crops.crop_person(data, (1000, 500), 700, 64, scale=1.2)
    np.testing.assert_allclose(fast_affine, affine)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    full, _ = crops.crop_person(decoded, (1000, 500), 700, 64, scale=1.2)
    assert np.abs(fast.astype(float) - full).mean() < 6.0
    ys, xs = np.nonzero(fast[..., 0] > 127)
    assert abs(xs.mean() - 31.5) < 1.0 and abs(ys.mean() - 31.5) < 1.0
    # the reduced decode is libjpeg's DCT scaling, pixel for pixel what OpenCV gives
    np.testing.assert_array_equal(crops.decode_jpeg(data, 4),
                                  cv2.imdecode(np.frombuffer(data, np.uint8),
                                               cv2.IMREAD_REDUCED_COLOR_4))


def test_two_people_in_one_jpeg_are_cut_from_one_decode(monkeypatch):
    """crop_people decodes once, at the reduction the larger crop still allows, and each crop
    is where crop_person puts it."""
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[::7] = 80
    for centre in ((500, 500), (1400, 600)):
        cv2.circle(image, centre, 30, (255, 255, 255), -1)
    data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    boxes = [((500, 500), 700.0), ((1400, 600), 200.0)]  # reductions 8 and 2 on their own
    affines = [crops.crop_affine(c, s, 1.2, 64) for c, s in boxes]
    assert [crops.jpeg_reduction(a) for a in affines] == [8, 2]
    calls = []
    decode = crops.decode_jpeg
    monkeypatch.setattr(crops, "decode_jpeg", lambda d, f=1: calls.append(f) or decode(d, f))
    both = crops.crop_people(data, affines, 64)
    assert calls == [2]
    for crop, (centre, side) in zip(both, boxes):
        alone, _ = crops.crop_person(data, centre, side, 64, scale=1.2)
        assert np.abs(crop.astype(float) - alone).mean() < 4.0
        ys, xs = np.nonzero(crop[..., 0] > 127)
        assert abs(xs.mean() - 31.5) < 1.0 and abs(ys.mean() - 31.5) < 1.0


def test_batched_crop_affines_equal_one_at_a_time():
    rng = np.random.default_rng(1)
    centres, sides = rng.uniform(0, 500, (5, 2)), rng.uniform(50, 300, 5)
    batched = crops.crop_affine(centres, sides, 1.25, 80, rotation_deg=10)
    assert batched.shape == (5, 2, 3)
    for affine, c, s in zip(batched, centres, sides):
        np.testing.assert_allclose(affine, crops.crop_affine(c, s, 1.25, 80, rotation_deg=10))


def test_corrupt_or_truncated_jpeg_is_rejected():
    data = cv2.imencode(".jpg", _dot_image())[1].tobytes()
    assert crops.crop_person(data, (320, 240), 100, 32)[0].shape == (32, 32, 3)
    for bad, why in ((data[: len(data) // 2], "Premature end"), (b"not a jpeg at all", "JPEG")):
        with pytest.raises(crops.UnreadableImageError, match=why):
            crops.crop_person(bad, (320, 240), 100, 32)


@pytest.mark.parametrize("bad", [np.zeros((5, 18)), np.zeros((5, 18, 2))])
def test_keypoints_of_wrong_shape_are_refused(bad):
    with pytest.raises(ValueError, match="N,K,3"):
        crops.keypoint_boxes(bad)
