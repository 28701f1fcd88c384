//! Rust bindings of the committed contract build (`control-api/contracts/
//! build`): ABI types from the `.abi` files, creation code from the `.bin`
//! files. `npm run check` in `contracts/` guarantees both match the sources.

use alloy::sol;
use alloy::sol_types::SolConstructor;
use alloy_primitives::{Address, Bytes};

use super::config::AllocationConfig;
use super::errors::ChainError;

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    WeToken,
    "contracts/build/WeToken.abi"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    SettlementDistributor,
    "contracts/build/SettlementDistributor.abi"
);

const WE_TOKEN_BIN: &str = include_str!("../../contracts/build/WeToken.bin");
const DISTRIBUTOR_BIN: &str = include_str!("../../contracts/build/SettlementDistributor.bin");

fn creation_code(bin: &str, name: &'static str, args: Vec<u8>) -> Result<Bytes, ChainError> {
    let mut code = hex::decode(bin.trim()).map_err(|e| ChainError::Deploy {
        contract: name,
        reason: format!("bad committed bytecode: {e}"),
    })?;
    code.extend_from_slice(&args);
    Ok(code.into())
}

/// Creation code + constructor arguments of `WeToken`.
pub(crate) fn we_token_deploy_code(allocation: &AllocationConfig) -> Result<Bytes, ChainError> {
    let args = WeToken::constructorCall {
        issue: allocation.issue,
        foundation: allocation.foundation,
        incentiveFund: allocation.incentive_fund,
        team: allocation.team,
        community: allocation.community,
    };
    creation_code(WE_TOKEN_BIN, "WeToken", args.abi_encode())
}

/// Creation code + constructor arguments of `SettlementDistributor`.
pub(crate) fn distributor_deploy_code(
    token: Address,
    fund: Address,
    operator: Address,
) -> Result<Bytes, ChainError> {
    let args = SettlementDistributor::constructorCall {
        token_: token,
        fund_: fund,
        operator_: operator,
    };
    creation_code(DISTRIBUTOR_BIN, "SettlementDistributor", args.abi_encode())
}
