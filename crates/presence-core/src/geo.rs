//! Locations and distances for `nearby` (SPEC §6), computed exactly as Redis GEO computes them,
//! so the memory store and the Redis store give the same answers.
//!
//! Redis keeps a GEO member as a 52-bit geohash (26 bits of latitude, 26 of longitude) and
//! measures from the centre of that cell, with the haversine formula on a sphere of radius
//! [`EARTH_RADIUS_M`]. [`Location::cell_centre`] and [`distance_m`] do the same. Redis GEO
//! covers latitudes up to ±[`LAT_LIMIT`] (Web Mercator's square), so locations beyond are
//! refused rather than clamped.

use std::fmt;

/// The largest latitude Redis GEO indexes.
pub const LAT_LIMIT: f64 = 85.051_128_78;

/// The sphere Redis measures on.
pub const EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// Bits per coordinate in a Redis geohash.
const STEP: u32 = 26;

/// A point on Earth, validated (also when read back: serialized as `lat,lon`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Location {
    lat: f64,
    lon: f64,
}

/// A latitude or longitude out of range (or not a number).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BadLocation {
    /// Latitude outside ±85.05112878.
    #[error("lat must be between -{LAT_LIMIT} and {LAT_LIMIT} (the range Redis GEO indexes)")]
    Lat,
    /// Longitude outside ±180.
    #[error("lon must be between -180 and 180")]
    Lon,
}

impl Location {
    /// A location from degrees; refuses what Redis GEO cannot index.
    pub fn new(lat: f64, lon: f64) -> Result<Self, BadLocation> {
        if !(-LAT_LIMIT..=LAT_LIMIT).contains(&lat) {
            return Err(BadLocation::Lat);
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(BadLocation::Lon);
        }
        Ok(Self { lat, lon })
    }

    /// Latitude in degrees.
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    pub fn lon(self) -> f64 {
        self.lon
    }

    /// The location rounded to `decimals` decimal places of a degree (3: a grid of about
    /// 111 m north–south, less east–west away from the equator): what a service stores when
    /// users should be findable nearby without giving their exact position away to anyone
    /// who asks from several points and works it out from the distances.
    pub fn rounded(self, decimals: u32) -> Self {
        let scale = 10f64.powi(decimals.min(15) as i32);
        let round = |v: f64| (v * scale).round() / scale;
        // Rounding never leaves the ranges: ±180 and ±85.05112878 round inwards or to ±180.
        Self {
            lat: round(self.lat).clamp(-LAT_LIMIT, LAT_LIMIT),
            lon: round(self.lon).clamp(-180.0, 180.0),
        }
    }

    /// The centre of the geohash cell holding this point: where Redis measures a member from.
    pub fn cell_centre(self) -> Self {
        Self {
            lat: quantized(self.lat, -LAT_LIMIT, LAT_LIMIT),
            lon: quantized(self.lon, -180.0, 180.0),
        }
    }

    /// The stored form, `lat,lon` (Rust's shortest round-trip formatting).
    pub fn encode(self) -> String {
        format!("{},{}", self.lat, self.lon)
    }

    /// Reads [`Location::encode`]'s form.
    pub fn decode(s: &str) -> Option<Self> {
        let (lat, lon) = s.split_once(',')?;
        Self::new(lat.parse().ok()?, lon.parse().ok()?).ok()
    }
}

impl From<Location> for String {
    fn from(l: Location) -> String {
        l.encode()
    }
}

impl TryFrom<String> for Location {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Location::decode(&s).ok_or_else(|| format!("not a location: {s:?}"))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lat, self.lon)
    }
}

/// One coordinate through Redis's geohash: truncated to its 26-bit cell (geohashEncode), then
/// the cell's centre (geohashDecode, geohashDecodeAreaToLongLat), clamped to the range.
fn quantized(v: f64, min: f64, max: f64) -> f64 {
    let cells = (1u64 << STEP) as f64;
    let scale = max - min;
    // The 26 bits: Redis converts the offset to uint32 (truncation). The top edge itself
    // spills into a cell past the last one, whose centre is clamped back onto the edge, as
    // Redis does.
    let cell = (((v - min) / scale) * cells).floor();
    let low = min + (cell / cells) * scale;
    let high = min + ((cell + 1.0) / cells) * scale;
    ((low + high) / 2.0).clamp(min, max)
}

/// The distance in metres from `a` to `b` as Redis computes it (geohashGetDistance).
pub fn distance_m(a: Location, b: Location) -> f64 {
    let (lon1, lon2) = (a.lon.to_radians(), b.lon.to_radians());
    let v = ((lon2 - lon1) / 2.0).sin();
    if v == 0.0 {
        return EARTH_RADIUS_M * (b.lat.to_radians() - a.lat.to_radians()).abs();
    }
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let u = ((lat2 - lat1) / 2.0).sin();
    let h = u * u + lat1.cos() * lat2.cos() * v * v;
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

/// A distance as the API shows it: metres, to the centimetre.
pub fn shown_distance(m: f64) -> f64 {
    (m * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_and_not_a_number_are_refused() {
        assert_eq!(Location::new(85.06, 0.0), Err(BadLocation::Lat));
        assert_eq!(Location::new(-90.0, 0.0), Err(BadLocation::Lat));
        assert_eq!(Location::new(0.0, 180.5), Err(BadLocation::Lon));
        assert_eq!(Location::new(f64::NAN, 0.0), Err(BadLocation::Lat));
        assert_eq!(Location::new(0.0, f64::INFINITY), Err(BadLocation::Lon));
        assert!(Location::new(LAT_LIMIT, -180.0).is_ok());
    }

    #[test]
    fn the_stored_form_round_trips() {
        let l = Location::new(52.520_008, 13.404_954).unwrap();
        assert_eq!(Location::decode(&l.encode()), Some(l));
        assert_eq!(Location::decode("91,0"), None);
        assert_eq!(Location::decode("1;2"), None);
    }

    #[test]
    fn rounding_snaps_to_the_grid_and_stays_in_range() {
        let l = Location::new(52.520_449, 13.404_954).unwrap().rounded(3);
        assert_eq!((l.lat(), l.lon()), (52.52, 13.405));
        let edge = Location::new(LAT_LIMIT, 179.9999).unwrap().rounded(0);
        assert_eq!((edge.lat(), edge.lon()), (85.0, 180.0));
        let south = Location::new(-LAT_LIMIT, -179.9999).unwrap().rounded(6);
        assert!(Location::new(south.lat(), south.lon()).is_ok());
    }

    #[test]
    fn a_cell_centre_is_within_a_metre_of_the_point() {
        let berlin = Location::new(52.520_008, 13.404_954).unwrap();
        let c = berlin.cell_centre();
        assert_ne!(c, berlin, "quantized");
        assert!(distance_m(berlin, c) < 1.0);
        assert_eq!(c.cell_centre(), c, "a centre is its own cell's centre");
    }

    #[test]
    fn distances_match_the_haversine_on_redis_sphere() {
        // Berlin to Paris is about 878 km on Redis's sphere.
        let berlin = Location::new(52.520_008, 13.404_954).unwrap();
        let paris = Location::new(48.856_613, 2.352_222).unwrap();
        let d = distance_m(berlin, paris);
        assert!((877_000.0..879_000.0).contains(&d), "{d}");
        assert_eq!(distance_m(berlin, berlin), 0.0);
        let north = Location::new(53.520_008, 13.404_954).unwrap();
        let one_degree = EARTH_RADIUS_M * 1f64.to_radians();
        assert!((distance_m(berlin, north) - one_degree).abs() < 1e-6);
    }
}
