// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title WE, the WeStream token.
/// @notice The whole supply is minted once, at construction, to the allocation
/// of the white paper; there is no mint or burn afterwards, so the supply is a
/// constant anyone can check.
contract WeToken is ERC20 {
    /// 1,250,000,000 WE with 18 decimals.
    uint256 public constant TOTAL_SUPPLY = 1_250_000_000 * 10 ** 18;

    /// @param issue receives 50% (public issue)
    /// @param foundation receives 30%
    /// @param incentiveFund receives 10% (ecological incentive fund: the
    ///        SettlementDistributor pulls epoch payouts from it)
    /// @param team receives 5% (founding team)
    /// @param community receives 5%
    constructor(address issue, address foundation, address incentiveFund, address team, address community)
        ERC20("WeStream", "WE")
    {
        uint256 share = TOTAL_SUPPLY / 20; // 5%
        _mint(issue, share * 10);
        _mint(foundation, share * 6);
        _mint(incentiveFund, share * 2);
        _mint(team, share);
        _mint(community, share);
    }
}
