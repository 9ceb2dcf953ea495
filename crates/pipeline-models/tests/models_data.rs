//! Element loading: shard reads, ImageNet normalisation, train-only
//! augmentation applied identically to every frame of a clip, prefetch order,
//! and stage 1's pairing of each fake with a real clip of the same identity.

use std::sync::Arc;

use pipeline_models::category::Category;
use pipeline_models::data::{
    load_batch, normalise_frames, stage1_pairs, Augment, BatchSpec, ElementSet, Prefetcher, Split,
};
use pipeline_models::synthetic::{write_elements, SyntheticSpec};

fn set() -> (tempfile::TempDir, ElementSet) {
    let tmp = tempfile::tempdir().unwrap();
    write_elements(
        tmp.path(),
        &SyntheticSpec {
            identities: 4,
            val_identities: 1,
            test_identities: 0,
            categories: vec![Category::Rvra, Category::Rvfa, Category::RvfaVc],
            clips_each: 2,
            frame_size: 16,
            clips_per_shard: 5,
            seed: 1,
        },
    )
    .unwrap();
    let s = ElementSet::open(tmp.path()).unwrap();
    (tmp, s)
}

#[test]
fn normalisation_gray_and_flip() {
    // One 2x2 frame: pixels (0,0)=red, (0,1)=green, (1,0)=blue, (1,1)=white.
    let raw = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
    let plain = normalise_frames(&raw, 2, false, false);
    // Channel 0 (R) plane: [1, 0, 0, 1] normalised with mean .485, std .229.
    let r = |v: f32| (v - 0.485) / 0.229;
    assert_eq!(&plain[0..4], &[r(1.0), r(0.0), r(0.0), r(1.0)]);
    let flipped = normalise_frames(&raw, 2, false, true);
    assert_eq!(&flipped[0..4], &[r(0.0), r(1.0), r(1.0), r(0.0)]);
    let gray = normalise_frames(&raw, 2, true, false);
    // Red pixel -> luma 0.299 in every channel.
    assert!((gray[0] - r(0.299)).abs() < 1e-6);
    assert!((gray[4] - (0.299 - 0.456) / 0.224).abs() < 1e-6);
}

#[test]
fn augmentation_is_per_clip_and_train_only() {
    let (_tmp, set) = set();
    let clips: Vec<usize> = (0..set.clips.len()).collect();
    let clean = load_batch(
        &set,
        &BatchSpec {
            clips: clips.clone(),
            frames: true,
            augment: None,
        },
    )
    .unwrap();
    let aug = Augment {
        grayscale_p: 0.0,
        hflip_p: 1.0,
    };
    let flipped = load_batch(
        &set,
        &BatchSpec {
            clips,
            frames: true,
            augment: Some((9, aug)),
        },
    )
    .unwrap();
    let (c, f) = (clean.frames.unwrap(), flipped.frames.unwrap());
    // Every frame of every clip is mirrored: the same transform for all 16.
    assert!(c.flip([4]).equal(&f));
    // The mel is never augmented.
    assert!(clean.mel.equal(&flipped.mel));
}

#[test]
fn prefetch_yields_batches_in_order() {
    let (_tmp, set) = set();
    let set = Arc::new(set);
    let specs: Vec<BatchSpec> = (0..set.clips.len())
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| BatchSpec {
            clips: c.to_vec(),
            frames: false,
            augment: None,
        })
        .collect();
    let got: Vec<Vec<usize>> = Prefetcher::start(set.clone(), specs.clone(), 3, 1)
        .map(|b| b.unwrap().clips)
        .collect();
    let want: Vec<Vec<usize>> = specs.into_iter().map(|s| s.clips).collect();
    assert_eq!(got, want);
}

#[test]
fn stage1_pairs_each_fake_with_a_real_of_its_identity() {
    let (_tmp, set) = set();
    let batches = stage1_pairs(&set, Split::Train, &[Category::Rvfa], 2, 5, 0, true);
    let flat: Vec<usize> = batches.concat();
    // 3 training identities x 2 RVFA clips, each with its real partner.
    assert_eq!(flat.len(), 12);
    assert!(batches.iter().all(|b| b.len() <= 4));
    for pair in flat.chunks(2) {
        let (fake, real) = (&set.clips[pair[0]], &set.clips[pair[1]]);
        assert_eq!(fake.category, Category::Rvfa);
        assert_eq!(real.category, Category::Rvra);
        assert_eq!(fake.identity, real.identity);
        assert_eq!(fake.split, Split::Train);
    }
    // The same (seed, epoch) gives the same batches; another epoch reshuffles.
    assert_eq!(
        batches,
        stage1_pairs(&set, Split::Train, &[Category::Rvfa], 2, 5, 0, true)
    );
    assert_ne!(
        batches,
        stage1_pairs(&set, Split::Train, &[Category::Rvfa], 2, 5, 1, true)
    );
}

/// The synthetic set is a function of its spec alone: libtorch's global
/// generator, drawn from by another thread meanwhile (as concurrent tests
/// do), does not change a byte.
#[test]
fn synthetic_elements_ignore_other_threads_draws() {
    let spec = SyntheticSpec {
        identities: 3,
        val_identities: 1,
        test_identities: 0,
        categories: vec![Category::Rvra, Category::Fvfa],
        clips_each: 2,
        frame_size: 16,
        clips_per_shard: 4,
        seed: 9,
    };
    let quiet = tempfile::tempdir().unwrap();
    write_elements(quiet.path(), &spec).unwrap();
    let busy = tempfile::tempdir().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drawer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tch::manual_seed(1);
                let _ = tch::Tensor::randn([64, 64], (tch::Kind::Float, tch::Device::Cpu));
            }
        })
    };
    write_elements(busy.path(), &spec).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drawer.join().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(quiet.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for n in names {
        assert_eq!(
            std::fs::read(quiet.path().join(&n)).unwrap(),
            std::fs::read(busy.path().join(&n)).unwrap(),
            "{n:?}"
        );
    }
}
