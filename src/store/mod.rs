pub mod audit;
pub mod otp;
