use std::io::Cursor;

use berth_contract::FunctionConfig;
use image::{ImageFormat, ImageReader, RgbImage};
use reqwest::StatusCode;

use crate::harness::{IMAGE_OPS, Server, api_error, image};

/// A 640x427 JPEG with gradients and texture, standing in for a photo.
fn photo() -> Vec<u8> {
    let img = RgbImage::from_fn(640, 427, |x, y| {
        let t = ((x * 7 + y * 13) % 32) as u8;
        image::Rgb([
            (x / 3) as u8 ^ t,
            (y / 2) as u8,
            ((x + y) / 5) as u8 ^ (t << 2),
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn decode(bytes: &[u8]) -> (ImageFormat, u32, u32) {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .unwrap();
    let format = reader.format().expect("a known image format");
    let img = reader.decode().expect("decodes");
    (format, img.width(), img.height())
}

#[tokio::test(flavor = "multi_thread")]
async fn image_ops_example_thumbnails_rotates_converts_and_watermarks() {
    let server = Server::start().await;
    let config = FunctionConfig {
        memory_mb: 512,
        ..image(IMAGE_OPS)
    };
    server.deploy("image-ops", &config).await;
    let input = photo();
    let cases = [
        ("op=thumbnail&w=128", (ImageFormat::Jpeg, 128, 85)),
        ("op=rotate&deg=90", (ImageFormat::Jpeg, 427, 640)),
        ("op=convert&format=png", (ImageFormat::Png, 640, 427)),
        (
            "op=watermark&text=Berth%20%C2%A9",
            (ImageFormat::Jpeg, 640, 427),
        ),
    ];
    for (query, expected) in cases {
        let (status, _, body) = server.invoke("image-ops", query, input.clone()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{query}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(decode(&body), expected, "{query}");
    }
    let (status, _, body) = server.invoke("image-ops", "op=rotate&deg=45", input).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(api_error(&body).exit_code, Some(2));
}
