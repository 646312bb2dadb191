//! The M2M encoder above the driver, through the fake device (real H.264 out).

use std::time::Duration;

use v4l::v4l_sys as k;

use super::fake::{self, Fault};
use super::*;
use crate::source::pattern::{read_code_strip, TestPattern};
use crate::viewer::decoder::H264Decoder;

const FRAME_US: u64 = 33_333;

fn settings(width: u32, height: u32) -> VideoSettings {
    VideoSettings {
        width,
        height,
        fps: 30,
        bitrate_kbps: 800,
        gop: 30,
    }
}

fn encoder(log: &fake::Log, s: &VideoSettings) -> M2mEncoder {
    M2mEncoder::new(s, false, "/dev/fake-m2m", fake::opener(log))
        .with_timeout(Duration::from_millis(20))
}

fn nal_types(data: &[u8]) -> Vec<NalType> {
    h264::nal_units(data).filter_map(h264::nal_type).collect()
}

#[test]
fn pictures_come_out_as_decodable_h264_with_the_controls_as_configured() {
    // 300x180 is padded by the device to 320 bytes by 192 rows.
    let s = settings(300, 180);
    let log = fake::log_with(Fault::None);
    let mut enc = encoder(&log, &s);
    let mut pattern = TestPattern::new(300, 180).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    for i in 0..10u32 {
        let frame = pattern.draw(500 + i, 1_000 + u64::from(i));
        let picture = enc
            .encode(frame, u64::from(i) * FRAME_US, false)
            .unwrap()
            .expect("a picture for every frame");
        assert_eq!(picture.key, i == 0, "picture {i}");
        assert_eq!((picture.width, picture.height), (300, 180));
        assert_eq!(picture.capture_us, u64::from(i) * FRAME_US);
        let decoded = decoder.decode(&picture.data).unwrap().expect("decoded");
        let code = read_code_strip(&decoded.y, decoded.y_stride, decoded.width, decoded.height);
        assert_eq!(code, Some((500 + i, 1_000 + u64::from(i))), "picture {i}");
    }
    let log = log.lock().unwrap();
    assert_eq!(log.opens, 1);
    assert_eq!(log.started, Some((300, 180, 30)));
    let set: Vec<(u32, i32)> = log.controls.iter().copied().take(7).collect();
    assert_eq!(
        set,
        [
            (k::V4L2_CID_MPEG_VIDEO_BITRATE, 800_000),
            (k::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD, 30),
            (
                k::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
                k::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
                    as i32
            ),
            (
                k::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
                k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0 as i32
            ),
            (k::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
            (k::V4L2_CID_MPEG_VIDEO_H264_MIN_QP, 16),
            (k::V4L2_CID_MPEG_VIDEO_H264_MAX_QP, 32),
        ]
    );
}

#[test]
fn a_keyframe_asked_for_is_the_next_picture_with_its_parameter_sets() {
    let s = settings(320, 240);
    let log = fake::log_with(Fault::None);
    let mut enc = encoder(&log, &s);
    let mut pattern = TestPattern::new(320, 240).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    for i in 0..8u32 {
        let ask = i == 5;
        let picture = enc
            .encode(pattern.draw(i, 0), u64::from(i) * FRAME_US, ask)
            .unwrap()
            .unwrap();
        assert_eq!(picture.key, i == 0 || ask, "picture {i}");
        let types = nal_types(&picture.data);
        if picture.key {
            assert_eq!(&types[..2], &[NalType::Sps, NalType::Pps], "{types:?}");
            assert!(types.contains(&NalType::Idr), "{types:?}");
            // A viewer joining here decodes from this picture alone.
            let mut fresh = H264Decoder::new().unwrap();
            assert!(fresh.decode(&picture.data).unwrap().is_some());
        }
        assert!(decoder.decode(&picture.data).unwrap().is_some());
    }
    // Once when the device started, once when asked; by the driver's control.
    assert_eq!(log.lock().unwrap().forced_keys, 2);
}

#[test]
fn level_and_rate_follow_size_and_boost_as_in_ustreamer() {
    let level = |w, h, boost| {
        controls(&settings(w, h), boost)
            .into_iter()
            .find(|c| c.0 == k::V4L2_CID_MPEG_VIDEO_H264_LEVEL)
            .unwrap()
            .1 as u32
    };
    assert_eq!(
        level(1920, 1080, true),
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_2
    );
    assert_eq!(
        level(1920, 1080, false),
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0
    );
    assert_eq!(
        level(2560, 1440, true),
        k::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_1
    );
    assert_eq!(fps_limit(1280, 720, false), 60);
    assert_eq!(fps_limit(1920, 1080, false), 30);
    assert_eq!(fps_limit(1920, 1080, true), 60);
}

#[test]
fn pictures_faster_than_the_rate_given_to_the_device_are_skipped_unless_a_key_is_asked() {
    let s = VideoSettings {
        fps: 60,
        ..settings(1920, 1080)
    };
    let log = fake::log_with(Fault::None);
    let mut enc = encoder(&log, &s);
    let frame = I420Frame::new(1920, 1080);
    // 1080p without boost: 30 pictures a second at most.
    assert!(enc.encode(&frame, 0, false).unwrap().is_some());
    assert_eq!(log.lock().unwrap().started, Some((1920, 1080, 30)));
    assert!(enc.encode(&frame, 16_667, false).unwrap().is_none());
    assert!(enc.encode(&frame, 33_334, false).unwrap().is_some());
    let key = enc.encode(&frame, 40_000, true).unwrap().expect("asked");
    assert!(key.key);
}

#[test]
fn a_failing_device_is_an_error_then_opened_again_a_second_later() {
    let s = settings(160, 120);
    let log = fake::log_with(Fault::QueueFrom(2));
    let mut enc = encoder(&log, &s);
    let frame = I420Frame::new(160, 120);
    assert!(enc.encode(&frame, 0, false).unwrap().unwrap().key);
    assert!(enc.encode(&frame, FRAME_US, false).unwrap().is_some());
    let err = format!("{:#}", enc.encode(&frame, 2 * FRAME_US, false).unwrap_err());
    assert!(
        err.contains("/dev/fake-m2m") && err.contains("queueing"),
        "{err}"
    );
    // Closed; not hammered with opens while it is broken.
    let err = format!("{:#}", enc.encode(&frame, 500_000, false).unwrap_err());
    assert!(err.contains("opening it again"), "{err}");
    assert_eq!(log.lock().unwrap().opens, 1);
    log.lock().unwrap().fault = None;
    let back = enc
        .encode(&frame, 1_200_000, false)
        .unwrap()
        .expect("a picture");
    assert!(back.key, "a reopened encoder starts with an IDR");
    assert_eq!(log.lock().unwrap().opens, 2);
}

#[test]
fn a_hung_device_times_out_with_an_error() {
    let log = fake::log_with(Fault::StallFrom(1));
    let mut enc = encoder(&log, &settings(160, 120));
    let frame = I420Frame::new(160, 120);
    assert!(enc.encode(&frame, 0, false).unwrap().is_some());
    let err = format!("{:#}", enc.encode(&frame, FRAME_US, false).unwrap_err());
    assert!(err.contains("no encoded picture within 20 ms"), "{err}");
}

#[test]
fn a_device_keeping_its_input_buffers_skips_pictures_then_fails() {
    let log = fake::log_with(Fault::HoldInputsFrom(0));
    let mut enc = encoder(&log, &settings(160, 120));
    let frame = I420Frame::new(160, 120);
    let mut t = 0;
    let mut next = |enc: &mut M2mEncoder| {
        t += FRAME_US;
        enc.encode(&frame, t, false)
    };
    for _ in 0..fake::INPUT_BUFFERS {
        assert!(next(&mut enc).unwrap().is_some());
    }
    for _ in 1..MAX_HELD_IN_A_ROW {
        assert!(
            next(&mut enc).unwrap().is_none(),
            "skipped, not an error yet"
        );
    }
    let err = format!("{:#}", next(&mut enc).unwrap_err());
    assert!(err.contains("kept every input buffer"), "{err}");
}

#[test]
fn a_stale_buffer_before_the_pictures_own_is_dropped() {
    let log = fake::log_with(Fault::StaleFirst);
    let mut enc = encoder(&log, &settings(160, 120));
    let mut pattern = TestPattern::new(160, 120).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    for i in 0..3u32 {
        let picture = enc
            .encode(pattern.draw(i, 0), u64::from(i + 1) * FRAME_US, false)
            .unwrap()
            .unwrap();
        assert!(nal_types(&picture.data).contains(&NalType::Slice) || picture.key);
        assert!(decoder.decode(&picture.data).unwrap().is_some());
    }
}

#[test]
fn a_device_that_cannot_open_or_take_the_controls_is_an_error() {
    let frame = I420Frame::new(160, 120);
    let log = fake::log_with(Fault::Open);
    let err = format!(
        "{:#}",
        encoder(&log, &settings(160, 120))
            .encode(&frame, 0, false)
            .unwrap_err()
    );
    assert!(err.contains("no such device"), "{err}");
    let log = fake::log_with(Fault::Controls);
    let err = format!(
        "{:#}",
        encoder(&log, &settings(160, 120))
            .encode(&frame, 0, false)
            .unwrap_err()
    );
    assert!(err.contains("setting the bitrate (800000)"), "{err}");
}

#[test]
fn a_picture_of_another_size_is_an_error() {
    let log = fake::log_with(Fault::None);
    let mut enc = encoder(&log, &settings(160, 120));
    let err = enc
        .encode(&I420Frame::new(320, 240), 0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("320x240") && err.contains("160x120"), "{err}");
}

#[test]
fn an_idr_without_parameter_sets_gets_the_last_ones() {
    let log = fake::log_with(Fault::None);
    let mut enc = encoder(&log, &settings(160, 120));
    let first = enc
        .encode(&I420Frame::new(160, 120), 0, false)
        .unwrap()
        .unwrap();
    let mut bare: Vec<u8> = Vec::new();
    for nal in h264::nal_units(&first.data) {
        if h264::nal_type(nal) == Some(NalType::Idr) {
            bare.extend_from_slice(&[0, 0, 0, 1]);
            bare.extend_from_slice(nal);
        }
    }
    let picture = enc
        .picture(
            Encoded {
                data: bare,
                key: true,
                timestamp_us: 7,
            },
            7,
        )
        .unwrap();
    assert_eq!(
        &nal_types(&picture.data)[..3],
        &[NalType::Sps, NalType::Pps, NalType::Idr]
    );
}

#[test]
fn a_path_that_is_not_an_m2m_encoder_is_a_clear_error() {
    let err = format!("{:#}", check_device(Path::new("/dev/null")).unwrap_err());
    assert!(
        err.contains("--h264-m2m-device /dev/null") && err.contains("not a V4L2 device"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        check_device(Path::new("/nonexistent/video11")).unwrap_err()
    );
    assert!(err.contains("does not exist"), "{err}");
}
